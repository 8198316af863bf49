//! A connection's helper thread: runs, in order, the requests that may block (and waits for
//! their releases), then hands the connection's state back to its loop.

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;

use mio::Token;
use tracing::error;

use super::event_loop::{Ctx, Held};
use crate::backend::Backend;
use crate::command::Data;
use crate::conn::{Connection, Flow, Request, Shared};
use crate::resp::Value;

/// What a connection's helper thread runs: requests that may block, in order.
pub(super) enum Item {
    /// Data commands to run as one transaction (one by one if that fails).
    Group(Vec<Data>),
    /// Any other request.
    Other(Request),
}

/// A connection's protocol state and its way to the store: with the loop, or with the
/// helper thread while it runs a job.
pub(super) struct State {
    pub(super) conn: Connection,
    pub(super) backend: Box<dyn Backend>,
}

/// A job for a helper thread.
pub(super) struct Job {
    pub(super) token: Token,
    pub(super) state: State,
    pub(super) items: Vec<Item>,
    /// A last reply, after which the connection closes (a malformed request's error).
    pub(super) last: Option<(Vec<Value>, u8)>,
}

/// A helper's answer: the state back (`None`: the job panicked, the connection is lost), the
/// replies (each already released or failed), and whether the connection closes after them.
pub(super) struct Done {
    pub(super) token: Token,
    pub(super) state: Option<State>,
    pub(super) replies: Vec<(Vec<Value>, u8)>,
    pub(super) close: bool,
}

/// A connection's helper thread.
pub(super) struct Helper {
    pub(super) jobs: Sender<Job>,
    pub(super) thread: JoinHandle<()>,
}

/// Stops a helper thread (after its job, if it runs one) and joins it.
pub(super) fn retire(h: Helper) {
    drop(h.jobs);
    let _ = h.thread.join();
}

pub(super) fn spawn_helper(ctx: &Ctx<'_>, peer: &SocketAddr) -> std::io::Result<Helper> {
    let (jobs, rx) = channel::<Job>();
    let (shared, done, waker) = (
        Arc::clone(ctx.shared),
        ctx.done.clone(),
        Arc::clone(ctx.waker),
    );
    let peer = *peer;
    let thread = std::thread::Builder::new()
        .name(format!("{}-{peer}", ctx.name))
        .spawn(move || {
            while let Ok(job) = rx.recv() {
                let token = job.token;
                // A panic (a backend bug) loses this connection, not the loop's others: its
                // loop closes it.
                let d =
                    catch_unwind(AssertUnwindSafe(|| run_job(job, &shared))).unwrap_or_else(|_| {
                        error!(peer = %peer, "a redis helper job panicked; closing its connection");
                        Done {
                            token,
                            state: None,
                            replies: Vec::new(),
                            close: true,
                        }
                    });
                if done.send(d).is_err() {
                    return;
                }
                let _ = waker.wake();
            }
        })?;
    Ok(Helper { jobs, thread })
}

/// Runs a helper's job: its requests in order (their releases overlap), then waits for
/// every release.
fn run_job(job: Job, shared: &Shared) -> Done {
    let Job {
        token,
        mut state,
        items,
        last,
    } = job;
    let mut held: Vec<Held> = Vec::new();
    let mut close = false;
    for item in items {
        match item {
            Item::Group(mut g) => run_group(&mut state, &mut g, shared, &mut held),
            Item::Other(r) => {
                let (reply, flow) = state.conn.handle_request(r, shared, &mut *state.backend);
                held.push((vec![reply], state.conn.proto(), state.conn.take_release()));
                if flow == Flow::Close {
                    close = true;
                    break;
                }
            }
        }
    }
    let mut replies: Vec<(Vec<Value>, u8)> = held
        .into_iter()
        .map(|(values, proto, release)| match release.map(|r| r.wait()) {
            Some(Err(f)) => (vec![Value::err(f.reply_text()); values.len()], proto),
            _ => (values, proto),
        })
        .collect();
    if let Some(l) = last
        && !close
    {
        replies.push(l);
        close = true;
    }
    Done {
        token,
        state: Some(state),
        replies,
        close,
    }
}

/// Runs gathered data commands as one transaction, or one by one if that fails, holding
/// their replies (on a thread that may block).
fn run_group(st: &mut State, group: &mut Vec<Data>, shared: &Shared, held: &mut Vec<Held>) {
    if group.is_empty() {
        return;
    }
    let ds: Vec<&Data> = group.iter().collect();
    if ds.len() > 1
        && let Ok(values) = st.conn.group(&ds, shared, &mut *st.backend)
    {
        held.push((values, st.conn.proto(), st.conn.take_release()));
        group.clear();
        return;
    }
    for d in group.drain(..) {
        let (reply, _) = st
            .conn
            .handle_request(Request::Data(d), shared, &mut *st.backend);
        held.push((vec![reply], st.conn.proto(), st.conn.take_release()));
    }
}
