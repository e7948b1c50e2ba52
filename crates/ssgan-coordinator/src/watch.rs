//! `WatchRun`: a replay of the recent step metrics, then the run's live events.

use std::pin::Pin;

use futures::Stream;
use ssgan_proto::v1;
use ssgan_proto::v1::run_event::Event;
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::convert::state_to_proto;
use crate::registry::RunEntry;
use crate::shared::Core;

pub(crate) type WatchStream = Pin<Box<dyn Stream<Item = Result<v1::RunEvent, Status>> + Send>>;

/// Events queued per watcher before the forwarding task waits for the client.
const WATCH_QUEUE: usize = 64;

/// Opens a watch: the held step metrics from `from_step` on and the current state first, then
/// every new event until the run reaches a final state.
pub(crate) async fn watch_run(
    core: &Core,
    request: &v1::WatchRunRequest,
) -> Result<WatchStream, Status> {
    let shared = core.lock().await;
    let entry = shared.registry.get(&request.run_id)?;
    // Subscribing and taking the replay under one lock, so no event is lost or repeated.
    let events = entry.events.subscribe();
    let replay = replay(entry, request.from_step);
    drop(shared);

    let (sender, receiver) = mpsc::channel(WATCH_QUEUE);
    tokio::spawn(forward(replay, events, sender, core.shutdown.clone()));
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

fn replay(entry: &RunEntry, from_step: u64) -> Vec<v1::RunEvent> {
    let steps = entry
        .history
        .iter()
        .filter(|metrics| metrics.step >= from_step)
        .map(|metrics| Event::Step(*metrics));
    let state = Event::State(v1::StateChange {
        state: state_to_proto(entry.record.state).into(),
        attempt: entry.record.attempts,
        message: entry.record.message.clone(),
    });
    steps
        .chain([state])
        .map(|event| v1::RunEvent { event: Some(event) })
        .collect()
}

type Sender = mpsc::Sender<Result<v1::RunEvent, Status>>;

async fn forward(
    replay: Vec<v1::RunEvent>,
    mut events: broadcast::Receiver<v1::RunEvent>,
    sender: Sender,
    mut shutdown: watch::Receiver<bool>,
) {
    for event in replay {
        if !send(&sender, event).await {
            return;
        }
    }
    loop {
        let received = tokio::select! {
            _ = shutdown.changed() => return,
            received = events.recv() => received,
        };
        match received {
            Ok(event) => {
                if !send(&sender, event).await {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(skipped)) => {
                tracing::debug!(skipped, "slow watcher skipped run events");
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Sends an event to the watcher and returns whether the watch goes on: false after a final
/// state or when the client has gone.
async fn send(sender: &Sender, event: v1::RunEvent) -> bool {
    let last = ends_watch(&event);
    sender.send(Ok(event)).await.is_ok() && !last
}

fn ends_watch(event: &v1::RunEvent) -> bool {
    let Some(Event::State(change)) = &event.event else {
        return false;
    };
    let state = change.state();
    [
        v1::RunState::Succeeded,
        v1::RunState::Failed,
        v1::RunState::Stopped,
    ]
    .contains(&state)
}
