//! The acks of one durable consumer's channel, coalesced: acks asked for together that settle
//! a run of deliveries from the oldest unsettled one go out as one `basic.ack` with `multiple`.
//! A quorum queue turns every ack frame into a command in its Raft log, so this takes work off
//! the broker when many handlers finish at once, and changes nothing when they finish one by one.
//!
//! The rule that keeps it safe: a multiple ack covers only deliveries whose handlers asked for
//! an ack. It never reaches past a delivery still being handled or being nacked (those stay
//! in the table as open until their nack is sent), and every frame of one flush is handed to
//! lapin, in order, before anything else can be.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::join_all;
use futures::FutureExt;
use lapin::options::BasicAckOptions;
use parking_lot::Mutex;
use tokio::sync::oneshot;

/// A consumer channel's deliveries not settled yet.
#[derive(Default)]
pub(super) struct Acks {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// By delivery tag: `None` while its handler runs (or its nack is on the way), else the
    /// ack asked for.
    open: BTreeMap<u64, Option<Wanted>>,
    /// A flush is on its way: acks asked for meanwhile join it.
    flushing: bool,
}

struct Wanted {
    acker: lapin::Acker,
    done: oneshot::Sender<lapin::Result<bool>>,
}

impl Acks {
    /// A delivery was handed out (deliveries come in tag order).
    pub(super) fn delivered(&self, tag: u64) {
        self.state.lock().open.insert(tag, None);
    }

    /// The delivery was settled otherwise (its nack is sent): it no longer holds up a run.
    pub(super) fn forget(&self, tag: u64) {
        self.state.lock().open.remove(&tag);
    }

    /// Acks the delivery: resolves once the frame that settles it is sent (`Ok(false)`: lapin
    /// did not send it, the channel is gone), like [`lapin::Acker::ack`].
    pub(super) async fn ack(self: &Arc<Self>, tag: u64, acker: lapin::Acker) -> lapin::Result<bool> {
        let (done, sent) = oneshot::channel();
        let first = {
            let mut state = self.state.lock();
            match state.open.get_mut(&tag) {
                Some(slot) => {
                    *slot = Some(Wanted { acker, done });
                    Ok(!std::mem::replace(&mut state.flushing, true))
                }
                None => Err(acker),
            }
        };
        let first = match first {
            Ok(first) => first,
            // Not one of this table's (cannot happen): acked on its own.
            Err(acker) => return acker.ack(BasicAckOptions::default()).await,
        };
        if first {
            // A task of its own, behind the handlers that are ready to finish now: their acks
            // join this flush. (Not run by this ack's future, which its caller may drop.)
            let this = self.clone();
            tokio::spawn(async move { this.flush().await });
        }
        sent.await.unwrap_or(Ok(false))
    }

    /// Sends every ack asked for: one multiple ack for the run from the oldest unsettled
    /// delivery, a single ack for each one behind a delivery still open.
    async fn flush(&self) {
        let (covered, early, sending) = {
            let mut state = self.state.lock();
            state.flushing = false;
            let mut covered = Vec::new();
            while let Some(entry) = state.open.first_entry() {
                if entry.get().is_none() {
                    break;
                }
                covered.extend(entry.remove());
            }
            let behind: Vec<u64> = state.open.iter().filter(|(_, w)| w.is_some()).map(|(t, _)| *t).collect();
            let alone = behind.iter().filter_map(|t| state.open.remove(t).flatten());
            let last = covered.pop();
            let multiple = !covered.is_empty();
            let sends = last
                .map(|w| (w, multiple))
                .into_iter()
                .chain(alone.map(|w| (w, false)))
                .map(|(w, multiple)| async move { (w.acker.ack(BasicAckOptions { multiple }).await, w.done) })
                .collect::<Vec<_>>();
            // Its first poll hands every frame to lapin, in this order, while the table is
            // held: no flush on another thread can send a later run first.
            let mut sending = Box::pin(join_all(sends));
            let early = (&mut sending).now_or_never();
            (covered, early, sending)
        };
        let results = match early {
            Some(results) => results,
            None => sending.await,
        };
        let mut results = results.into_iter();
        if let Some((result, done)) = results.next() {
            for w in covered {
                let _ = w.done.send(result.clone());
            }
            let _ = done.send(result);
        }
        for (result, done) in results {
            let _ = done.send(result);
        }
    }
}
