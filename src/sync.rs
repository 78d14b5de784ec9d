//! One account's sync, told in the order it happens: lock the account, open the
//! target and the state, finish what a killed run left, connect, secure, log in, list,
//! plan, fetch and deliver, make the state durable, delete, quit.
//!
//! The order is the never-lose-mail promise: a message gets a DELE only after its
//! delivery and its state record are durable, and deletions take effect only at QUIT.

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Result};

use crate::auth::{self, Login, Offer};
use crate::config::{Account, Delivery, TlsMode};
use crate::deliver::{DeliverError, MaildirTarget, MboxTarget, MdaTarget, Recovered, Target};
use crate::lock::AccountLock;
use crate::policy::{self, Policy, SessionPlan};
use crate::pop3::response::apop_timestamp;
use crate::pop3::transport::{Stream, TlsConfig};
use crate::pop3::{Client, Credentials, Flow, Peer, Session, Trace};
use crate::secret::Secret;
use crate::state::UidlState;

/// What a sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub fetched: usize,
    pub bytes: u64,
    pub deleted: usize,
    /// Messages the server refused to send; they stay on the server.
    pub refused: usize,
}

/// Syncs one account. `trace` receives the protocol steps, passwords redacted.
pub fn sync_account(account: &Account, trace: Option<Trace>) -> Result<Report> {
    let _lock = lock(account)?;
    let mut target = open_target(account)?;
    let mut state = UidlState::open(&account.state_file())?;
    recover(&mut state, target.as_mut())?;

    let secret = if account.auth.uses_token() {
        account.oauth_token.resolve()?
    } else {
        account.password.resolve()?
    };
    let tls = TlsConfig::new(&account.tls_options())?;
    let client = connect(account, &tls, trace)?;
    let mut session = login(client, account, &secret)?;

    let listing = session.listing()?;
    let plan = policy::plan(
        &listing,
        state.delivered_uids(),
        &Policy { keep: account.keep },
    );
    state.forget(&plan.forget)?;

    let mut report = Report::default();
    let fetched = fetch_and_deliver(
        &mut session,
        &plan,
        target.as_mut(),
        &mut state,
        &mut report,
    );
    // Whatever happened while fetching, every completed delivery is made durable
    // before a single DELE goes out.
    state.sync()?;
    let (delivered, stopped_by) = fetched?;

    let mut deletions = plan.delete.clone();
    if plan.delete_after_delivery {
        deletions.extend(delivered);
    }
    let refused = session.delete(&deletions)?;
    session.quit()?;
    report.deleted = deletions.len() - refused.len();

    if let Some(err) = stopped_by {
        return Err(err);
    }
    if report.refused > 0 {
        return Err(anyhow!(crate::pop3::Error::Protocol(format!(
            "the server refused to send {} message(s); they stay on the server",
            report.refused
        ))));
    }
    Ok(report)
}

fn lock(account: &Account) -> Result<AccountLock> {
    crate::durable::create_dir_all(&account.state_dir).map_err(|source| {
        crate::state::StateError::Io {
            action: "create the directory of",
            path: account.state_file(),
            source,
        }
    })?;
    Ok(AccountLock::acquire(&account.lock_file())?)
}

fn open_target(account: &Account) -> Result<Box<dyn Target>> {
    Ok(match &account.deliver {
        Delivery::Maildir(dir) => Box::new(MaildirTarget::open(dir)?),
        Delivery::Mbox(file) => Box::new(MboxTarget::open(file, account.timeout)?),
        Delivery::Mda(argv) => Box::new(MdaTarget::new(
            argv.clone(),
            account.mda_recipient.clone(),
            account.mda_timeout,
        )),
    })
}

/// Finishes what a killed run left: a delivery announced in the state either
/// completed (record it, so it is not fetched twice) or did not (clean up after it, so
/// it is fetched again).
fn recover(state: &mut UidlState, target: &mut dyn Target) -> Result<()> {
    for interrupted in state.interrupted() {
        match target.recover(&interrupted.location)? {
            Recovered::Delivered => state.record_delivered(&interrupted.uid, now())?,
            Recovered::NotDelivered => state.record_abandoned(&interrupted.uid)?,
        }
    }
    state.sync()?;
    Ok(())
}

/// Connects and secures the connection as configured; never falls back to cleartext.
fn connect(account: &Account, tls: &TlsConfig, trace: Option<Trace>) -> Result<Client<Stream>> {
    let stream = Stream::connect(&account.host, account.port, account.timeout)?;
    let stream = match account.tls {
        TlsMode::Implicit => stream.secure(tls, &account.host)?,
        TlsMode::Starttls | TlsMode::None => stream,
    };
    let mut client = Client::new(stream, trace)?;
    if account.tls == TlsMode::Starttls {
        client = client.starttls(|plain| plain.secure(tls, &account.host))?;
    }
    Ok(client)
}

fn login(
    mut client: Client<Stream>,
    account: &Account,
    secret: &Secret,
) -> Result<Session<Stream>> {
    let caps = client.capabilities()?.clone();
    let offer = Offer {
        caps: &caps,
        apop: apop_timestamp(&client.greeting().raw).is_some(),
        encrypted: account.tls != TlsMode::None,
    };
    let (user, secret) = (account.user.as_str(), secret.expose());
    let credentials = match auth::choose(account.auth, &offer)? {
        Login::User => Credentials::User {
            user,
            password: secret,
        },
        Login::Apop => Credentials::Apop {
            user,
            password: secret,
        },
        Login::Sasl(mechanism) => Credentials::Sasl {
            mechanism,
            user,
            secret,
            peer: Peer {
                host: account.host.clone(),
                port: account.port,
            },
        },
    };
    match client.login(credentials) {
        Ok(session) => Ok(session),
        Err(failed) => {
            // Be polite, but the login error is what matters.
            let _ = failed.client.quit();
            Err(failed.error.into())
        }
    }
}

/// Fetches every planned message and delivers it. Returns the numbers of the
/// messages delivered and, if some could not be, the worst reason; a failed session is
/// an `Err`. A failure of the target itself (a full disk) stops the fetching; one that
/// concerns a single message (an MDA's verdict) does not.
fn fetch_and_deliver(
    session: &mut Session<Stream>,
    plan: &SessionPlan,
    target: &mut dyn Target,
    state: &mut UidlState,
    report: &mut Report,
) -> Result<(Vec<u32>, Option<anyhow::Error>)> {
    let nums: Vec<u32> = plan.fetch.iter().map(|m| m.num).collect();
    let mut delivered = Vec::with_capacity(nums.len());
    let mut failures = Failures::default();
    let mut index = 0;
    session.retrieve(&nums, |num, body| {
        let message = &plan.fetch[index];
        index += 1;
        debug_assert_eq!(message.num, num);
        let Ok(body) = body else {
            report.refused += 1;
            return Flow::Continue;
        };
        match deliver_one(target, state, &message.uid, body) {
            Ok(bytes) => {
                delivered.push(num);
                report.fetched += 1;
                report.bytes += bytes;
                Flow::Continue
            }
            Err(err) => {
                let per_message = is_per_message(&err);
                // A broken connection is reported by `retrieve` itself.
                if !is_source_error(&err) {
                    failures.add(err.context(format!("message {num} stays on the server")));
                }
                if per_message {
                    Flow::Continue
                } else {
                    Flow::Stop
                }
            }
        }
    })?;
    Ok((delivered, failures.worst()))
}

/// Delivery failures of one session: the worst is reported, with a count of the rest.
#[derive(Default)]
struct Failures {
    worst: Option<anyhow::Error>,
    count: usize,
}

impl Failures {
    fn add(&mut self, err: anyhow::Error) {
        self.count += 1;
        let worse = self
            .worst
            .as_ref()
            .is_none_or(|w| crate::exit::classify(&err) > crate::exit::classify(w));
        if worse {
            self.worst = Some(err);
        }
    }

    fn worst(self) -> Option<anyhow::Error> {
        let others = self.count.saturating_sub(1);
        self.worst.map(|err| {
            if others == 0 {
                err
            } else {
                err.context(format!(
                    "{others} other message(s) were not delivered either"
                ))
            }
        })
    }
}

fn is_source_error(err: &anyhow::Error) -> bool {
    matches!(
        err.downcast_ref::<DeliverError>(),
        Some(DeliverError::Source(_))
    )
}

fn is_per_message(err: &anyhow::Error) -> bool {
    err.downcast_ref::<DeliverError>()
        .is_some_and(DeliverError::is_per_message)
}

/// Delivers one message: the target announces where it goes (recorded durably as an
/// intent), delivers, and the delivery is recorded.
fn deliver_one(
    target: &mut dyn Target,
    state: &mut UidlState,
    uid: &str,
    body: &mut dyn Read,
) -> Result<u64> {
    let mut announced = false;
    let result = target.deliver(body, &mut |location| {
        state.record_intent(uid, location)?;
        announced = true;
        Ok(())
    });
    match result {
        Ok(bytes) => {
            state.record_delivered(uid, now())?;
            Ok(bytes)
        }
        Err(err) => {
            // The target left nothing behind; if this record is lost, recovery
            // finds the location empty and comes to the same conclusion.
            if announced {
                let _ = state.record_abandoned(uid);
            }
            Err(err.into())
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
