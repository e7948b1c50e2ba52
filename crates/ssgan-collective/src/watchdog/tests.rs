//! The watchdog against a fake library whose markers complete only when the test completes them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::*;

const TIMEOUT: Duration = Duration::from_millis(200);
const POLL: Duration = Duration::from_millis(5);

/// A fake collective library: a marker is a shared flag that is set once its work is done.
#[derive(Default)]
struct FakeLibrary {
    aborts: AtomicUsize,
    async_error: Mutex<Option<String>>,
    failing_query: AtomicBool,
}

impl CollectiveLibrary for FakeLibrary {
    type Marker = Arc<AtomicBool>;

    fn is_complete(&self, marker: &Self::Marker) -> Result<bool, String> {
        if self.failing_query.load(Ordering::SeqCst) {
            return Err("unhandled cuda error".to_owned());
        }
        Ok(marker.load(Ordering::SeqCst))
    }

    fn async_error(&self) -> Option<String> {
        self.async_error.lock().unwrap().clone()
    }

    fn abort(&self) {
        self.aborts.fetch_add(1, Ordering::SeqCst);
    }
}

fn start(rank: usize) -> (Arc<FakeLibrary>, Watchdog<FakeLibrary>) {
    let library = Arc::new(FakeLibrary::default());
    let watchdog = Watchdog::start(library.clone(), rank, TIMEOUT, POLL).unwrap();
    (library, watchdog)
}

/// Issues a collective whose marker the test completes by setting the returned flag.
fn issue(watchdog: &Watchdog<FakeLibrary>, operation: &'static str) -> (u64, Arc<AtomicBool>) {
    let ticket = watchdog.begin(operation).unwrap();
    let sequence = ticket.sequence();
    let done = Arc::new(AtomicBool::new(false));
    watchdog.enqueued(ticket, done.clone());
    (sequence, done)
}

#[test]
fn finished_collectives_never_abort() {
    let (library, watchdog) = start(0);
    for _ in 0..3 {
        let (sequence, done) = issue(&watchdog, "all_reduce_sum");
        done.store(true, Ordering::SeqCst);
        watchdog.wait(sequence).unwrap();
    }
    std::thread::sleep(TIMEOUT + 10 * POLL);
    assert_eq!(library.aborts.load(Ordering::SeqCst), 0);
    assert_eq!(watchdog.failure(), None);
}

#[test]
fn overdue_collective_aborts_once() {
    let (library, watchdog) = start(3);
    let (done_sequence, done) = issue(&watchdog, "broadcast");
    done.store(true, Ordering::SeqCst);
    let (stuck_sequence, _never) = issue(&watchdog, "all_reduce_sum");
    let started = Instant::now();

    let error = watchdog.wait(stuck_sequence).unwrap_err();
    let waited = started.elapsed();

    assert!(waited >= TIMEOUT, "aborted after {waited:?}");
    assert!(
        waited < TIMEOUT + Duration::from_secs(2),
        "aborted after {waited:?}"
    );
    assert_eq!(library.aborts.load(Ordering::SeqCst), 1);
    let failure = watchdog.failure().unwrap();
    assert_eq!(failure.rank, 3);
    assert_eq!(failure.operation, "all_reduce_sum");
    assert_eq!(failure.sequence, stuck_sequence);
    assert_eq!(failure.reason, FailureReason::TimedOut { timeout: TIMEOUT });
    let message = error.to_string();
    assert!(message.contains("rank 3"), "{message}");
    assert!(message.contains("all_reduce_sum"), "{message}");
    assert!(done_sequence < stuck_sequence);
}

#[test]
fn calls_after_abort_fail_at_once() {
    let (library, watchdog) = start(1);
    let (sequence, _never) = issue(&watchdog, "barrier");
    assert!(watchdog.wait(sequence).is_err());

    let error = watchdog.begin("all_reduce_sum").unwrap_err();

    assert!(matches!(
        error,
        CollectiveError::Aborted {
            operation: "barrier",
            ..
        }
    ));
    std::thread::sleep(10 * POLL);
    assert_eq!(library.aborts.load(Ordering::SeqCst), 1);
}

#[test]
fn hanging_enqueue_counts_toward_timeout() {
    let (library, watchdog) = start(0);
    // The enqueue call never returns, so no marker is ever stored.
    let ticket = watchdog.begin("all_reduce_sum").unwrap();

    let error = watchdog.wait(ticket.sequence()).unwrap_err();

    assert!(matches!(error, CollectiveError::Aborted { .. }));
    assert_eq!(library.aborts.load(Ordering::SeqCst), 1);
}

#[test]
fn library_error_aborts_before_timeout() {
    let (library, watchdog) = start(2);
    let (sequence, _never) = issue(&watchdog, "all_reduce_sum");
    *library.async_error.lock().unwrap() = Some("remote process exited".to_owned());
    let started = Instant::now();

    watchdog.wait(sequence).unwrap_err();

    assert!(started.elapsed() < TIMEOUT);
    let reason = watchdog.failure().unwrap().reason;
    assert_eq!(
        reason,
        FailureReason::Library("remote process exited".to_owned())
    );
}

#[test]
fn failed_query_aborts() {
    let (library, watchdog) = start(0);
    let (sequence, _never) = issue(&watchdog, "broadcast");
    library.failing_query.store(true, Ordering::SeqCst);

    watchdog.wait(sequence).unwrap_err();

    let reason = watchdog.failure().unwrap().reason;
    assert_eq!(
        reason,
        FailureReason::Library("unhandled cuda error".to_owned())
    );
}

#[test]
fn failed_enqueue_is_forgotten() {
    let (library, watchdog) = start(0);
    let ticket = watchdog.begin("all_reduce_sum").unwrap();
    let sequence = ticket.sequence();

    watchdog.enqueue_failed(ticket);

    watchdog.wait(sequence).unwrap();
    std::thread::sleep(TIMEOUT + 10 * POLL);
    assert_eq!(library.aborts.load(Ordering::SeqCst), 0);
}

#[test]
fn idle_communicator_never_times_out() {
    let (library, watchdog) = start(0);
    std::thread::sleep(TIMEOUT + 10 * POLL);
    assert_eq!(library.aborts.load(Ordering::SeqCst), 0);
    drop(watchdog);
}
