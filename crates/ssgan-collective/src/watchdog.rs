//! A watchdog for collectives that a library runs asynchronously, such as NCCL on a CUDA
//! stream: it aborts the communicator when a collective has not finished within the timeout.
//!
//! NCCL enqueues a collective on a stream and returns at once. A dead peer then shows up
//! as a kernel that never finishes, and whatever waits on the stream next (a copy to the
//! host, a synchronize) blocks forever. The watchdog thread polls the completion marker
//! that the caller records after each collective. When the oldest unfinished collective is
//! older than the timeout, or the library reports an error, it aborts the communicator once.
//! Aborting makes the stuck kernels end, so the blocked waits return, and every later call
//! returns the recorded failure.
//!
//! The calls into the library go through [`CollectiveLibrary`], so the timing logic runs in
//! CPU tests with a fake library.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::CollectiveError;

/// The calls that a [`Watchdog`] makes into a communicator library.
pub trait CollectiveLibrary: Send + Sync + 'static {
    /// A completion marker recorded after a collective, such as a CUDA event.
    type Marker: Send + 'static;

    /// Returns whether the work before `marker` has finished, or the library's error.
    fn is_complete(&self, marker: &Self::Marker) -> Result<bool, String>;

    /// Returns an error that the library detected outside any call, such as a peer that
    /// closed its connection, or `None`.
    fn async_error(&self) -> Option<String>;

    /// Aborts the communicator, so that its unfinished collectives end. A second call must
    /// do nothing.
    fn abort(&self);
}

/// Why the watchdog aborted the communicator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchdogFailure {
    pub rank: usize,
    /// The oldest collective that had not finished.
    pub operation: &'static str,
    /// Sequence number of that collective on this rank, from 0.
    pub sequence: u64,
    pub reason: FailureReason,
}

/// Cause of a [`WatchdogFailure`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// The collective did not finish within the timeout.
    TimedOut { timeout: Duration },
    /// The library reported an error.
    Library(String),
}

impl WatchdogFailure {
    pub(crate) fn to_error(&self) -> CollectiveError {
        let reason = match &self.reason {
            FailureReason::TimedOut { timeout } => {
                format!("did not finish within {} ms", timeout.as_millis())
            }
            FailureReason::Library(message) => format!("failed: {message}"),
        };
        CollectiveError::Aborted {
            operation: self.operation,
            rank: self.rank,
            sequence: self.sequence,
            reason,
        }
    }
}

/// A collective that has been issued and not yet seen finished.
struct InFlight<M> {
    sequence: u64,
    operation: &'static str,
    started: Instant,
    /// `None` while the library call that enqueues the collective has not returned.
    marker: Option<M>,
}

struct State<M> {
    next_sequence: u64,
    in_flight: VecDeque<InFlight<M>>,
    failure: Option<WatchdogFailure>,
    stopping: bool,
}

struct Shared<L: CollectiveLibrary> {
    library: Arc<L>,
    rank: usize,
    timeout: Duration,
    poll_interval: Duration,
    state: Mutex<State<L::Marker>>,
    /// Signalled when a collective finishes, on failure and on stop.
    changed: Condvar,
}

/// Token of one collective, returned by [`Watchdog::begin`].
#[derive(Debug)]
#[must_use = "pass the ticket to Watchdog::enqueued or Watchdog::enqueue_failed"]
pub struct Ticket {
    sequence: u64,
}

/// Watches the collectives of one communicator from a background thread.
///
/// Protocol per collective: [`Watchdog::begin`] before the library call that enqueues it,
/// then [`Watchdog::enqueued`] with a marker recorded after it (or
/// [`Watchdog::enqueue_failed`]), and [`Watchdog::wait`] when the caller needs the result on
/// the host. The deadline counts from `begin`, so an enqueue call that hangs is caught too.
pub struct Watchdog<L: CollectiveLibrary> {
    shared: Arc<Shared<L>>,
    thread: Option<JoinHandle<()>>,
}

impl<L: CollectiveLibrary> Watchdog<L> {
    /// Starts the watchdog thread of `rank`'s communicator.
    ///
    /// `timeout` is the maximum time from [`Watchdog::begin`] to completion of a collective.
    /// The thread checks every `poll_interval`, so a failure is detected up to one interval
    /// late. Fails only when the thread cannot be spawned.
    pub fn start(
        library: Arc<L>,
        rank: usize,
        timeout: Duration,
        poll_interval: Duration,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            library,
            rank,
            timeout,
            poll_interval,
            state: Mutex::new(State {
                next_sequence: 0,
                in_flight: VecDeque::new(),
                failure: None,
                stopping: false,
            }),
            changed: Condvar::new(),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("collective-watchdog-{rank}"))
            .spawn(move || watch(&thread_shared))?;
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }

    /// Registers a collective that is about to be enqueued. Fails with the recorded failure
    /// once the communicator has been aborted.
    pub fn begin(&self, operation: &'static str) -> Result<Ticket, CollectiveError> {
        let mut state = self.shared.lock();
        if let Some(failure) = &state.failure {
            return Err(failure.to_error());
        }
        let sequence = state.next_sequence;
        state.next_sequence += 1;
        state.in_flight.push_back(InFlight {
            sequence,
            operation,
            started: Instant::now(),
            marker: None,
        });
        Ok(Ticket { sequence })
    }

    /// Stores the completion marker of an enqueued collective.
    pub fn enqueued(&self, ticket: Ticket, marker: L::Marker) {
        let mut state = self.shared.lock();
        let entry = state
            .in_flight
            .iter_mut()
            .find(|entry| entry.sequence == ticket.sequence);
        if let Some(entry) = entry {
            entry.marker = Some(marker);
        }
    }

    /// Forgets a collective whose enqueue call failed, which the caller reports itself.
    pub fn enqueue_failed(&self, ticket: Ticket) {
        let mut state = self.shared.lock();
        state
            .in_flight
            .retain(|entry| entry.sequence != ticket.sequence);
        self.shared.changed.notify_all();
    }

    /// Returns the recorded failure, if the communicator has been aborted.
    pub fn failure(&self) -> Option<WatchdogFailure> {
        self.shared.lock().failure.clone()
    }

    /// Blocks until the collective with `sequence` and all before it have finished, or the
    /// watchdog has aborted the communicator.
    pub fn wait(&self, sequence: u64) -> Result<(), CollectiveError> {
        let mut state = self.shared.lock();
        loop {
            if let Some(failure) = &state.failure {
                return Err(failure.to_error());
            }
            let finished = state
                .in_flight
                .front()
                .is_none_or(|oldest| oldest.sequence > sequence);
            if finished {
                return Ok(());
            }
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

impl Ticket {
    /// Sequence number of the collective, for [`Watchdog::wait`].
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
}

impl<L: CollectiveLibrary> Drop for Watchdog<L> {
    fn drop(&mut self) {
        self.shared.lock().stopping = true;
        self.shared.changed.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl<L: CollectiveLibrary> Shared<L> {
    fn lock(&self) -> MutexGuard<'_, State<L::Marker>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Polls the collectives in flight until stopped or until it has aborted the communicator;
/// the body of the watchdog thread.
fn watch<L: CollectiveLibrary>(shared: &Shared<L>) {
    let mut state = shared.lock();
    while !state.stopping {
        if let Some(failure) = check(shared, &mut state) {
            tracing::debug!(
                rank = failure.rank,
                operation = failure.operation,
                sequence = failure.sequence,
                reason = ?failure.reason,
                "aborting the communicator"
            );
            shared.library.abort();
            state.failure = Some(failure);
            state.in_flight.clear();
            shared.changed.notify_all();
            return;
        }
        state = shared
            .changed
            .wait_timeout(state, shared.poll_interval)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// Removes finished collectives from the front of the queue, and returns a failure when the
/// oldest unfinished one is overdue or the library reports an error.
fn check<L: CollectiveLibrary>(
    shared: &Shared<L>,
    state: &mut State<L::Marker>,
) -> Option<WatchdogFailure> {
    let failure = |entry: &InFlight<L::Marker>, reason| WatchdogFailure {
        rank: shared.rank,
        operation: entry.operation,
        sequence: entry.sequence,
        reason,
    };
    let mut finished_any = false;
    while let Some(oldest) = state.in_flight.front() {
        let done = match &oldest.marker {
            Some(marker) => shared.library.is_complete(marker),
            None => Ok(false),
        };
        match done {
            Ok(true) => {
                state.in_flight.pop_front();
                finished_any = true;
            }
            Ok(false) => break,
            Err(message) => return Some(failure(oldest, FailureReason::Library(message))),
        }
    }
    if finished_any {
        shared.changed.notify_all();
    }
    let oldest = state.in_flight.front()?;
    if let Some(message) = shared.library.async_error() {
        return Some(failure(oldest, FailureReason::Library(message)));
    }
    if oldest.started.elapsed() > shared.timeout {
        let reason = FailureReason::TimedOut {
            timeout: shared.timeout,
        };
        return Some(failure(oldest, reason));
    }
    None
}

#[cfg(test)]
mod tests;
