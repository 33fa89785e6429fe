//! `loadtest netem`: what `tc qdisc add ... netem delay D loss P%` does, for kernels built
//! without `sch_netem` (this project's CI kernel has none). Packets that a firewall rule sends
//! to an NFQUEUE (`iptables ... -j NFQUEUE --queue-num N --queue-bypass`) are dropped with
//! probability P and released D after they arrived, in order; the kernel's TCP sees a real
//! lossy, slow link and retransmits as it would on one. Only the packets the rule selects are
//! touched, and with `--queue-bypass` they flow unimpaired once this process stops.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nfq::{Message, Queue, Verdict};
use rand::Rng;

/// Longest sleep between two looks at the queue: the timing error of a release.
const TICK: Duration = Duration::from_micros(500);
/// Packets the kernel may hold for this queue before it drops new ones.
const KERNEL_QUEUE: u32 = 65_536;

/// `loadtest netem`: the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct NetemArgs {
    /// The NFQUEUE number the firewall rule sends packets to.
    #[arg(long, default_value_t = 0)]
    pub queue: u16,
    /// How long each packet is held.
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    pub delay: Duration,
    /// Percentage of packets dropped (0 to 100).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
}

impl NetemArgs {
    /// # Errors
    /// A loss outside 0..=100 or a delay over 10 s.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(0.0..=100.0).contains(&self.loss) {
            bail!("--loss is a percentage between 0 and 100");
        }
        if self.delay > Duration::from_secs(10) {
            bail!("--delay must be at most 10s");
        }
        Ok(())
    }
}

/// What was done to the packets.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub dropped: u64,
}

/// Holds and drops the packets of `args.queue` until `stop` is set. Blocking: run it on a
/// thread of its own.
///
/// # Errors
/// The queue cannot be opened or bound (not root, no `CONFIG_NETFILTER_NETLINK_QUEUE`, or
/// another process holds it).
pub fn run(args: &NetemArgs, stop: &Arc<AtomicBool>) -> anyhow::Result<Counts> {
    let mut queue = Queue::open().context("opening a netfilter queue socket (root needed)")?;
    queue
        .bind(args.queue)
        .with_context(|| format!("binding NFQUEUE {}", args.queue))?;
    queue.set_copy_range(args.queue, 0)?;
    queue.set_queue_max_len(args.queue, KERNEL_QUEUE)?;
    queue.set_nonblocking(true);
    let mut held: VecDeque<(Instant, Message)> = VecDeque::new();
    let mut counts = Counts::default();
    let mut rng = rand::rng();
    let loss = args.loss / 100.0;
    while !stop.load(Ordering::Relaxed) {
        loop {
            match queue.recv() {
                Ok(mut msg) => {
                    if loss > 0.0 && rng.random::<f64>() < loss {
                        msg.set_verdict(Verdict::Drop);
                        queue.verdict(msg)?;
                        counts.dropped += 1;
                    } else {
                        held.push_back((Instant::now() + args.delay, msg));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("reading the netfilter queue"),
            }
        }
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, mut msg)) = held.pop_front() {
                msg.set_verdict(Verdict::Accept);
                queue.verdict(msg)?;
                counts.passed += 1;
            }
        }
        let next = held.front().map_or(TICK, |(due, _)| {
            due.saturating_duration_since(now).min(TICK)
        });
        std::thread::sleep(next.max(Duration::from_micros(50)));
    }
    for (_, mut msg) in held {
        msg.set_verdict(Verdict::Accept);
        queue.verdict(msg)?;
        counts.passed += 1;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_delay_are_bounded() {
        let args = |delay: u64, loss: f64| NetemArgs {
            queue: 0,
            delay: Duration::from_millis(delay),
            loss,
        };
        assert!(args(50, 5.0).validate().is_ok());
        assert!(args(50, 0.0).validate().is_ok());
        assert!(args(50, 100.5).validate().is_err());
        assert!(args(50, -1.0).validate().is_err());
        assert!(args(10_001, 5.0).validate().is_err());
    }
}
