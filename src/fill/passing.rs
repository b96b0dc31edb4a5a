//! A body of unannounced length that cannot be stored (past the storage limit, or with no room
//! in the fill budget): handed on to the readers it has at the pace of the fastest, keeping for
//! the slower ones at most what it held when it passed (at least [`PASSING_FLOOR`]); a reader
//! further behind is cut off with an error.

use super::{next_data, End, Failing, Fill, Holding, Received, State};
use crate::service::SendBody;
use bytes::Bytes;
use tokio::time::Instant;

/// The least a body that cannot be stored keeps for its slower readers.
pub(crate) const PASSING_FLOOR: usize = 256 * 1024;

/// Why a body of unannounced length cannot be stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unstorable {
    /// It passed the storage limit.
    TooLarge,
    /// The fill budget had no room for it.
    NoRoom,
}

impl Unstorable {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Unstorable::TooLarge => "response-body-too-large",
            Unstorable::NoRoom => "fill-budget",
        }
    }
}

/// The rest of a body that cannot be stored, for the readers it has.
pub(crate) struct Passing<'a, B> {
    failing: Failing<'a>,
    body: B,
    deadline: Instant,
}

/// The body of `failing`'s fill cannot be stored: `data` (its latest chunk) goes to the readers,
/// and the rest as they take it.
pub(super) fn pass<B>(
    failing: Failing<'_>,
    data: Bytes,
    body: B,
    deadline: Instant,
    why: Unstorable,
) -> Received<'_, B> {
    failing.0.update(|state| {
        let bytes: usize = state.chunks.iter().map(Bytes::len).sum();
        let most = bytes.max(PASSING_FLOOR);
        state.passing = Some(Holding { bytes, most });
        state.pass_on(data);
    });
    let rest = Passing {
        failing,
        body,
        deadline,
    };
    Received::Unstorable(why, rest)
}

impl State {
    /// While passing: a chunk more for the readers, letting go of what they all had, and of
    /// what is past the most it may keep (cutting off the readers that still needed it).
    fn pass_on(&mut self, data: Bytes) {
        let all_had = self.positions.values().copied().min().unwrap_or(self.end());
        let holding = self
            .passing
            .as_mut()
            .expect("only a body passing is passed on");
        holding.bytes += data.len();
        self.chunks.push_back(data);
        while self.chunks.len() > 1 && (self.base < all_had || holding.bytes > holding.most) {
            let gone = self.chunks.pop_front().expect("more than one chunk");
            holding.bytes -= gone.len();
            self.base += 1;
        }
        let base = self.base;
        self.positions.retain(|_, next| *next >= base);
    }
}

impl<B: SendBody> Passing<'_, B> {
    /// Hands the rest of the body on, a chunk each time a reader has had all before it. Ends
    /// when the body does, fails, or has no reader left.
    pub(crate) async fn hand_on(mut self) {
        let fill = self.failing.0;
        while fill.wanted(self.deadline).await {
            match next_data(&mut self.body, self.deadline).await {
                None => return fill.end(End::Complete),
                Some(Ok(data)) => fill.update(|state| state.pass_on(data)),
                Some(Err(())) => return fill.end(End::Failed),
            }
        }
        fill.end(End::Failed);
    }
}

impl Fill {
    /// Waits until a reader has every chunk received; `false` when no reader is left, or
    /// `deadline` passed.
    async fn wanted(&self, deadline: Instant) -> bool {
        loop {
            let moved = self.moved.notified();
            {
                let state = self.state();
                if state.positions.is_empty() {
                    return false;
                }
                let end = state.end();
                if state.positions.values().any(|&next| next >= end) {
                    return true;
                }
            }
            if tokio::time::timeout_at(deadline, moved).await.is_err() {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{counted, next, rest, settle};
    use super::super::{FillFailed, Length};
    use super::*;
    use crate::fill::FillBudget;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Receives `body` into `fill`, which cannot store it, and hands it on.
    fn pass_through(
        fill: &Arc<Fill>,
        body: impl SendBody + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let fill = Arc::clone(fill);
        tokio::spawn(async move {
            match fill.receive(b"", body).await {
                Received::Unstorable(why, rest) => {
                    assert_eq!(why, Unstorable::TooLarge);
                    rest.hand_on().await;
                }
                _ => panic!("past the limit, it cannot be stored"),
            }
        })
    }

    #[tokio::test]
    async fn a_body_too_large_to_store_goes_at_its_fastest_readers_pace_and_keeps_some_for_the_others(
    ) {
        let budget = FillBudget::new(1 << 20);
        let fill = Fill::new(Length::AtMost(4), budget.reserve(0).unwrap());
        let (mut fast, mut slow) = (fill.reader(), fill.reader());
        let taken = Arc::new(AtomicUsize::new(0));
        let task = pass_through(&fill, counted(&["ab", "cd", "ef", "gh", "ij"], &taken));
        settle().await;
        // Past the limit at the third chunk: no more is taken until a reader has it.
        assert_eq!(taken.load(Ordering::SeqCst), 3);
        for expected in ["ab", "cd"] {
            assert_eq!(
                &next(&mut fast).await.unwrap().unwrap()[..],
                expected.as_bytes()
            );
        }
        settle().await;
        assert_eq!(taken.load(Ordering::SeqCst), 3);
        assert_eq!(&next(&mut fast).await.unwrap().unwrap()[..], b"ef");
        settle().await;
        assert_eq!(
            taken.load(Ordering::SeqCst),
            4,
            "the fast reader had all: the next comes"
        );
        assert_eq!(
            rest(&mut fast).await.unwrap(),
            b"ghij",
            "without waiting for the slow one"
        );
        task.await.unwrap();
        assert_eq!(
            rest(&mut slow).await.unwrap(),
            b"abcdefghij",
            "kept for the slow one"
        );
        drop((fast, slow, fill));
        assert_eq!(budget.held(), 0, "its share of the budget is given back");
    }

    #[tokio::test]
    async fn a_reader_too_far_behind_a_body_too_large_to_store_is_cut_off_and_the_fill_holds_no_more(
    ) {
        const CHUNK: usize = 100 * 1024;
        let chunk: &'static str = Box::leak("y".repeat(CHUNK).into_boxed_str());
        let budget = FillBudget::new(1 << 30);
        // Past the limit at the second chunk, holding one: it keeps the floor, 256 KiB.
        let fill = Fill::new(Length::AtMost(150 * 1024), budget.reserve(0).unwrap());
        let (mut fast, mut stalled) = (fill.reader(), fill.reader());
        let taken = Arc::new(AtomicUsize::new(0));
        let task = pass_through(&fill, counted(&[chunk; 6], &taken));
        let mut got = Vec::new();
        while let Some(chunk) = next(&mut fast).await {
            got.extend_from_slice(&chunk.unwrap());
            let state = fill.state();
            let held = state.passing.as_ref().map_or(0, |holding| holding.bytes);
            assert!(held <= PASSING_FLOOR, "held {held}");
        }
        assert_eq!(got.len(), 6 * CHUNK, "the fast reader got every byte");
        task.await.unwrap();
        assert_eq!(taken.load(Ordering::SeqCst), 6);
        assert!(
            matches!(next(&mut stalled).await, Some(Err(FillFailed))),
            "the stalled reader lost its place: an error, not a short body"
        );
        assert!(
            matches!(next(&mut fill.reader()).await, Some(Err(FillFailed))),
            "too late"
        );
    }

    #[tokio::test]
    async fn a_body_too_large_to_store_stops_being_received_when_its_readers_leave() {
        let budget = FillBudget::new(1 << 20);
        let fill = Fill::new(Length::AtMost(2), budget.reserve(0).unwrap());
        let mut reader = fill.reader();
        let taken = Arc::new(AtomicUsize::new(0));
        let body = counted(&["ab", "cd", "ef", "gh"], &taken);
        let task = pass_through(&fill, body);
        assert_eq!(&next(&mut reader).await.unwrap().unwrap()[..], b"ab");
        drop(reader);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the fill ends with its last reader")
            .unwrap();
        assert!(taken.load(Ordering::SeqCst) < 4, "the rest is never taken");
    }
}
