//! The systemd user units in contrib/systemd: they load cleanly in
//! `systemd-analyze verify`, and keep the settings their comments promise.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNITS: [&str; 3] = [
    "popfetch.service",
    "popfetch.timer",
    "popfetch-daemon.service",
];

fn unit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd")
}

fn read_unit(name: &str) -> String {
    let path = unit_dir().join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The settings (`Key=value` lines, comments left out) of one unit file.
fn settings(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .collect()
}

/// `systemd-analyze verify` on one unit file. Without --user: the user scope
/// needs $XDG_RUNTIME_DIR and a running user manager, which a test container
/// has not got, and the checks made of the file itself are the same.
fn verify(unit: &Path) -> Output {
    Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze: {e}: apt-get install systemd (scripts/test-deps.sh)")
        })
}

#[test]
fn units_pass_systemd_analyze_verify() {
    // verify checks that ExecStart's command exists, and systemd 252 looks a bare
    // name up in its fixed path, not in ExecSearchPath=: the copies run the
    // popfetch just built. Everything else is the shipped file.
    let copy = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_popfetch");
    for name in UNITS {
        let text = read_unit(name);
        assert!(
            name.ends_with(".timer") || text.contains("\nExecStart=popfetch "),
            "{name}: no ExecStart=popfetch to point at the built binary"
        );
        let text = text.replace("ExecStart=popfetch ", &format!("ExecStart={exe} "));
        fs::write(copy.path().join(name), text).unwrap();
    }
    for name in UNITS {
        let out = verify(&copy.path().join(name));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "systemd-analyze verify {name}: {}\n{stderr}",
            out.status
        );
        let about_ours: Vec<&str> = stderr.lines().filter(|l| l.contains("popfetch")).collect();
        assert!(
            about_ours.is_empty(),
            "systemd-analyze verify {name} warns:\n{}",
            about_ours.join("\n")
        );
    }
}

/// The check above would pass vacuously if verify stopped naming the file in
/// its warnings: a broken copy must be caught.
#[test]
fn systemd_analyze_verify_names_a_broken_unit() {
    let copy = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_popfetch");
    let text = read_unit("popfetch.service")
        .replace("ExecStart=popfetch ", &format!("ExecStart={exe} "))
        .replace("TimeoutStartSec=15min", "TimeoutStartSec=soon");
    let unit = copy.path().join("popfetch.service");
    fs::write(&unit, text).unwrap();
    let out = verify(&unit);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("popfetch") && l.contains("soon")),
        "no warning about TimeoutStartSec=soon:\n{stderr}"
    );
}

#[test]
fn units_keep_their_promises() {
    for name in ["popfetch.service", "popfetch-daemon.service"] {
        let text = read_unit(name);
        let set = settings(&text);
        for want in [
            "NoNewPrivileges=yes",
            "RestrictSUIDSGID=yes",
            "SystemCallArchitectures=native",
        ] {
            assert!(set.contains(&want), "{name} lacks {want}");
        }
        // Namespacing needs privileges a user manager has not got: the unit
        // would fail to start (226/NAMESPACE) where user namespaces are off.
        for absent in [
            "ProtectSystem=",
            "ProtectHome=",
            "PrivateTmp=",
            "PrivateUsers=",
        ] {
            assert!(
                !set.iter().any(|l| l.starts_with(absent)),
                "{name} sets {absent}"
            );
        }
    }

    let oneshot = read_unit("popfetch.service");
    let set = settings(&oneshot);
    assert!(set.contains(&"Type=oneshot"), "{set:?}");
    assert!(set.contains(&"ExecStart=popfetch sync"), "{set:?}");
    // A temporary failure (EX_TEMPFAIL) must not mark the unit failed.
    assert!(set.contains(&"SuccessExitStatus=75"), "{set:?}");

    let daemon = read_unit("popfetch-daemon.service");
    let set = settings(&daemon);
    assert!(
        set.contains(&"ExecStart=popfetch daemon --foreground"),
        "{set:?}"
    );
    assert!(
        set.iter()
            .any(|l| l.starts_with("ExecReload=") && l.contains("-HUP") && l.contains("$MAINPID")),
        "the daemon reloads on SIGHUP: {set:?}"
    );
    for want in [
        "Restart=on-failure",
        "KillSignal=SIGTERM",
        "TimeoutStopSec=10",
    ] {
        assert!(set.contains(&want), "popfetch-daemon.service lacks {want}");
    }
    assert!(set.contains(&"WantedBy=default.target"), "{set:?}");

    let timer = read_unit("popfetch.timer");
    let set = settings(&timer);
    assert!(set.contains(&"OnUnitInactiveSec=5min"), "{set:?}");
    assert!(set.contains(&"WantedBy=timers.target"), "{set:?}");
}
