//! A channel for a reading thread that runs ahead of its consumer, bounded both by items and
//! by bytes: a count alone would let a repository of large blobs hold dozens of them in memory
//! at once.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};

struct Budget {
    state: Mutex<State>,
    changed: Condvar,
    cap: usize,
}

#[derive(Default)]
struct State {
    in_flight: usize,
    closed: bool,
}

impl Budget {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two plain numbers: a panic elsewhere cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Sender<T> {
    items: mpsc::SyncSender<(T, usize)>,
    budget: Arc<Budget>,
}

pub struct Receiver<T> {
    items: mpsc::Receiver<(T, usize)>,
    budget: Arc<Budget>,
}

/// At most `items` items and, unless a single item is larger, `bytes` bytes in flight.
pub fn bounded<T>(items: usize, bytes: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = mpsc::sync_channel(items);
    let budget = Arc::new(Budget {
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
        cap: bytes,
    });
    (
        Sender {
            items: tx,
            budget: budget.clone(),
        },
        Receiver { items: rx, budget },
    )
}

impl<T> Sender<T> {
    /// Waits until `size` more bytes fit (an item larger than the cap waits for an empty
    /// channel). Gives the item back when the receiver is gone.
    pub fn send(&self, item: T, size: usize) -> Result<(), T> {
        let mut state = self.budget.lock();
        while !state.closed && state.in_flight > 0 && state.in_flight + size > self.budget.cap {
            state = self
                .budget
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
        }
        if state.closed {
            return Err(item);
        }
        state.in_flight += size;
        drop(state);
        self.items.send((item, size)).map_err(|e| e.0.0)
    }
}

impl<T> Receiver<T> {
    /// The next item, or `None` once every sender is gone and the channel is empty.
    pub fn recv(&self) -> Option<T> {
        let (item, size) = self.items.recv().ok()?;
        let mut state = self.budget.lock();
        state.in_flight -= size;
        drop(state);
        self.budget.changed.notify_all();
        Some(item)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.budget.lock().closed = true;
        self.budget.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_flight_stay_under_the_cap_and_large_items_pass_alone() {
        let (tx, rx) = bounded::<usize>(64, 100);
        std::thread::scope(|s| {
            s.spawn(move || {
                for size in [40, 40, 40, 250, 10, 60, 60] {
                    tx.send(size, size).unwrap();
                }
            });
            let mut got = Vec::new();
            loop {
                std::thread::sleep(std::time::Duration::from_millis(5));
                let in_flight = rx.budget.lock().in_flight;
                assert!(in_flight <= 100 || in_flight == 250, "{in_flight}");
                match rx.recv() {
                    Some(size) => got.push(size),
                    None => break,
                }
            }
            assert_eq!(got, [40, 40, 40, 250, 10, 60, 60]);
        });
    }

    #[test]
    fn a_sender_waiting_for_room_is_released_when_the_receiver_goes() {
        let (tx, rx) = bounded::<u8>(64, 10);
        tx.send(1, 10).unwrap();
        let waiter = std::thread::spawn(move || tx.send(2, 10));
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(rx);
        assert_eq!(waiter.join().unwrap(), Err(2));
    }
}
