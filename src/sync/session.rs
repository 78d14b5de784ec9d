//! The session once logged in, as a story: list, plan (with the filter's
//! verdicts), fetch and deliver, make the target and the state durable, delete,
//! quit; and the dry run, which stops at the plan.

use std::collections::HashSet;

use anyhow::{anyhow, Result};

use super::connect::open_session;
use super::fetch::{fetch_and_deliver, Failures, Sink};
use super::policy::{self, Action, Known, SessionPlan};
use super::preview::Headline;
use super::state::{self, Ledger, Place, UidlState};
use super::{connect, filter, glance, now, Failed, Options, Progress, Rank, Report};
use crate::config::Account;
use crate::deliver::Target;
use crate::pop3::{self, Flow, Session, Wire};

/// The session once logged in: list, plan, fetch and deliver, make the target and
/// the state durable, delete, quit. Every error path before the DELEs returns
/// without QUIT, so the server never enters its UPDATE state (RFC 1939 §6) and
/// every message stays there.
pub(super) fn run_session<S: Wire>(
    Connected { session, asked }: Connected<S>,
    account: &Account,
    target: &mut dyn Target,
    state: &mut dyn Ledger,
    progress: Option<&dyn Progress>,
    warn: &dyn Fn(&str),
    rank: Rank,
) -> Result<Report, Failed> {
    let mut report = Report::default();
    match run(
        session,
        asked,
        account,
        target,
        state,
        progress,
        warn,
        rank,
        &mut report,
    ) {
        Ok(()) => Ok(report),
        // What was delivered before the failure is still delivered: the caller
        // counts it and tells the on_new_mail hook.
        Err(error) => Err(Failed {
            error,
            report: Box::new(report),
        }),
    }
}

#[allow(clippy::too_many_arguments)]
fn run<S: Wire>(
    mut session: Session<S>,
    asked: Option<Asked>,
    account: &Account,
    target: &mut dyn Target,
    state: &mut dyn Ledger,
    progress: Option<&dyn Progress>,
    warn: &dyn Fn(&str),
    rank: Rank,
    report: &mut Report,
) -> Result<()> {
    let mut failures = Failures::new(rank);
    // A keep-on-server mailbox as the last session left it is not listed again,
    // nor one that only grew: then only its new messages are.
    let now = now();
    let glance_path = glance::path(account);
    let glancing = glance::applies(account, &*state, now);
    let mut vouched = None;
    if glancing {
        match glance::load(&glance_path, account, &*state, now) {
            Some(seen) => match glance::compare(&seen, glimpse_of(&mut session, &seen, asked)?) {
                glance::Seen::Same => {
                    *report = unchanged(session, &seen)?;
                    return Ok(());
                }
                glance::Seen::Grown { count, octets }
                    if count - seen.count <= glance::tail_limit(session.pipelines()) =>
                {
                    if let Some(tail) = session.tail(seen.count + 1, count)? {
                        if glance::tail_fits(&seen, octets, &tail, &*state) {
                            vouched = Some((seen, tail));
                        }
                    }
                }
                _ => {}
            },
            // STAT goes with the listing, to be kept for the next session.
            None => session.stat_with_listing()?,
        }
    }
    // The messages the glance vouches for, known and kept, come before the tail.
    let (vouched, tail) = vouched.unzip();
    let before = vouched.as_ref().map_or(0, |seen| seen.count as usize);
    let plan = plan_session(
        &mut session,
        account,
        &*state,
        Shown::No,
        tail,
        warn,
        &mut failures,
    )?;
    // Adopted records first: a crash between them and the forgetting of their old
    // form leaves both, never neither.
    for (uid, record) in &plan.adopt {
        state.record_delivered(uid, record.first_seen, record.id)?;
    }
    state.forget_records(&plan.stale)?;
    state.forget(&plan.forget)?;

    report.skipped = plan.skipped().len();
    if let Some(progress) = progress {
        let fetch = plan.fetch();
        progress.planned(fetch.len() as u64, fetch.iter().map(|m| m.size).sum());
    }
    let mut sink = Sink {
        target: &mut *target,
        state: &mut *state,
        progress,
        configured: account.deliver.to_string(),
    };
    let fetched = fetch_and_deliver(
        &mut session,
        &plan,
        account,
        &mut sink,
        report,
        &mut failures,
    );
    // Whatever happened while fetching, every completed delivery is made durable,
    // in the target and in the state, before a single DELE goes out.
    let flushed = target.flush();
    state.sync()?;
    flushed?;
    let delivered = fetched?;

    let mut deletions = plan.delete();
    if plan.delete_after_delivery {
        deletions.extend(delivered);
    }
    let refused = session.delete(&deletions)?;
    report.login_delay = session.login_delay();
    // A server without UIDL has no unique-ids to glance at.
    let stat = session.stat_seen().filter(|_| !session.uidl_refused());
    session.quit()?;
    report.deleted = deletions.len() - refused.len();
    let listed = before + plan.messages.len();
    report.on_server = listed.saturating_sub(report.deleted);
    state.tidy();
    report.known = state.count();
    if glancing {
        // Only a session that left nothing to do is worth a glance: every
        // message known and kept, nothing skipped, failed or deleted; and not
        // on a server that repeats unique-ids (popa3d), whose last one may be
        // a new message's too.
        let repeats =
            !pop3::repeated_uids(plan.messages.iter().map(|(m, _)| m.uid.as_str())).is_empty();
        let settled = deletions.is_empty()
            && !repeats
            && failures.none()
            && report.refused == 0
            && plan
                .messages
                .iter()
                .all(|(_, action)| matches!(action, Action::Keep | Action::Fetch))
            && report.fetched == plan.fetch().len();
        let first = match &vouched {
            Some(seen) => Some(&seen.first),
            None => plan.messages.first().map(|(m, _)| &m.uid),
        };
        let seen = match (stat, first, plan.messages.last()) {
            (Some((count, octets)), Some(first), Some((last, _)))
                if settled && count as usize == listed =>
            {
                Some(glance::Glance {
                    count,
                    octets,
                    first: first.clone(),
                    last: last.uid.clone(),
                    known: state.count(),
                    // Listed in full when the glance it grew from was.
                    listed_at: vouched.as_ref().map_or(now, |seen| seen.listed_at),
                    journal: state::fingerprint::of(&Place::of(account).path()),
                })
            }
            _ => None,
        };
        match seen {
            Some(seen) => glance::save(&glance_path, &seen),
            None => glance::forget(&glance_path),
        }
    }
    if let Some(err) = refused_deletions(&refused) {
        warn(&format!("{err:#}"));
        failures.add(err);
    }

    if let Some(err) = failures.worst() {
        return Err(err);
    }
    if report.refused > 0 {
        return Err(anyhow!(crate::pop3::Error::Protocol(format!(
            "the server refused to send {} message(s); they stay on the server",
            report.refused
        ))));
    }
    Ok(())
}

/// A logged-in session as `sync` hands it over, with what it asked already.
pub(super) struct Connected<S> {
    pub session: Session<S>,
    pub asked: Option<Asked>,
}

/// What a session asked for a glance before the state was read: the count it
/// asked `UIDL` at, and what the server said (see `sync::open_state_and_session`).
pub(super) type Asked = (u32, pop3::Glimpse);

/// STAT and the unique-ids at 1 and at the glance's count, unless asked already.
fn glimpse_of<S: Wire>(
    session: &mut Session<S>,
    seen: &glance::Glance,
    asked: Option<Asked>,
) -> Result<pop3::Glimpse, pop3::Error> {
    match asked {
        Some((count, glimpse)) if count == seen.count => Ok(glimpse),
        _ => session.stat_and_ends(seen.count),
    }
}

/// The end of a session that found the mailbox as `seen` saw it: nothing to
/// list, fetch or delete.
pub(super) fn unchanged<S: Wire>(session: Session<S>, seen: &glance::Glance) -> Result<Report> {
    let report = Report {
        on_server: seen.count as usize,
        known: seen.known,
        login_delay: session.login_delay(),
        ..Report::default()
    };
    session.quit()?;
    Ok(report)
}

/// The error for DELEs the server refused (RFC 1939 §5 allows -ERR): the messages
/// stay on the server, and the run must not look like a success. The first refusal
/// decides the exit: `[IN-USE]` or `[SYS/TEMP]` (RFC 2449 §8, RFC 3206) is worth a
/// retry (75), anything else is a protocol error (76).
fn refused_deletions(refused: &[(u32, crate::pop3::Status)]) -> Option<anyhow::Error> {
    use crate::pop3::RespCode;
    let (_, first) = refused.first()?;
    // Only these two codes make it temporary; any other (even [AUTH]) is a
    // protocol error here.
    let code = first
        .code
        .clone()
        .filter(|c| matches!(c, RespCode::InUse | RespCode::SysTemp));
    let err = crate::pop3::Error::Server {
        command: "DELE",
        code,
        text: first.text.clone(),
    };
    Some(anyhow::Error::new(err).context(format!(
        "the server refused to delete {} message(s); they stay on the server, and the next run tries again",
        refused.len()
    )))
}

/// A dry run: the same session up to the plan, then QUIT. Nothing is locked,
/// created, recorded, delivered or deleted.
pub(super) fn dry_run(account: &Account, options: Options) -> Result<Report> {
    let warn = |text: &str| {
        if let Some(w) = &options.warn {
            w(text)
        }
    };
    let state = UidlState::peek(&Place::of(account))?;
    let mut session = open_session(account, options.trace)?;
    let mut failures = Failures::new(options.rank.unwrap_or(|_| 0));
    let plan = plan_session(
        &mut session,
        account,
        &state,
        Shown::Yes,
        None,
        &warn,
        &mut failures,
    )?;
    // The table shows date, sender and subject as `list` does; a server without
    // TOP still gets its plan, without those columns.
    let messages: Vec<(u32, u64)> = plan.messages.iter().map(|(m, _)| (m.num, m.size)).collect();
    let mut heads = foldhash::HashMap::default();
    connect::headers(&mut session, &messages, |num, head| {
        if let Ok(head) = head {
            heads.insert(num, Headline::of(head));
        }
        Flow::Continue
    })?;
    let login_delay = session.login_delay();
    session.quit()?;
    let fetch = plan.fetch();
    Ok(Report {
        // Nothing was deleted or recorded: the server and the state as they are.
        on_server: plan.messages.len(),
        known: state.count(),
        login_delay,
        delivered: Vec::new(),
        fetched: fetch.len(),
        bytes: 0,
        octets: fetch.iter().map(|m| m.size).sum(),
        heads,
        deleted: plan.delete().len()
            + if plan.delete_after_delivery {
                fetch.len()
            } else {
                0
            },
        skipped: plan.skipped().len(),
        refused: 0,
        plan: Some(plan),
    })
}

/// Whether a plan is shown to the user (a dry run) or only carried out.
#[derive(Clone, Copy)]
enum Shown {
    Yes,
    No,
}

/// Lists the server, plans what to do with each message, and asks the filter.
fn plan_session<S: Wire>(
    session: &mut Session<S>,
    account: &Account,
    known: &dyn policy::Known,
    shown: Shown,
    tail: Option<Vec<pop3::ListedMessage>>,
    warn: &dyn Fn(&str),
    failures: &mut Failures,
) -> Result<SessionPlan> {
    // Only a message that may be fetched needs its size, but a plan that is shown
    // shows every size.
    let now = now();
    let sized = |uid: &str| policy::needs_size(uid, known, &account.policy, now);
    let sized: Option<&dyn Fn(&str) -> bool> = match shown {
        Shown::No => Some(&sized),
        Shown::Yes => None,
    };
    let mut plan = match tail {
        // New messages after those a glance vouches for: listed already.
        Some(tail) => {
            let probes = connect::probe(session, &tail, known, &account.policy, now, warn)?;
            policy::plan_tail(tail, &probes, known, &account.policy, now)
        }
        None => {
            let listing = connect::listing(session, sized, warn)?;
            let probes = connect::probe(session, &listing, known, &account.policy, now, warn)?;
            policy::plan(listing, &probes, known, &account.policy, now)
        }
    };
    run_filter(session, &mut plan, account, failures)?;
    Ok(plan)
}

/// Runs the filter on each message planned for fetching, by its headers.
fn run_filter<S: Wire>(
    session: &mut Session<S>,
    plan: &mut SessionPlan,
    account: &Account,
    failures: &mut Failures,
) -> Result<()> {
    let Some(argv) = &account.filter else {
        return Ok(());
    };
    let mut judged = HashSet::new();
    let mut stop = None;
    // A verdict can let another message in under max_messages, so look again.
    loop {
        let batch: Vec<(u32, u64)> = (plan.fetch().into_iter())
            .filter(|m| !judged.contains(&m.num))
            .map(|m| (m.num, m.size))
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        connect::headers(session, &batch, |num, head| {
            judged.insert(num);
            let head = match head {
                Ok(head) => head,
                Err(status) => {
                    stop = Some(anyhow::Error::new(pop3::Error::Server {
                        command: "TOP",
                        code: status.code,
                        text: status.text,
                    }));
                    return Flow::Stop;
                }
            };
            let verdict = match filter::judge(argv, head, account.mda_timeout) {
                Ok(verdict) => verdict,
                // A filter that cannot start judges no message: stop before fetching
                // any, rather than report the same cause once per message.
                Err(err @ filter::FilterError::Spawn { .. }) => {
                    stop = Some(err.into());
                    return Flow::Stop;
                }
                Err(err) => {
                    failures.add(anyhow::Error::new(err));
                    Action::Skip(policy::Reason::Filter)
                }
            };
            plan.apply_filter(num, verdict, &account.policy);
            Flow::Continue
        })?;
        if let Some(stop) = stop {
            return Err(stop);
        }
    }
}
