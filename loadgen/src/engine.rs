//! One event loop per thread (mio, edge-triggered) driving that thread's share of the
//! connections: connect, send, verify every reply byte, record latency, repeat.
//!
//! Closed loop: a connection sends its next request as soon as the last reply verified.
//! Open loop (`rate`): the thread follows a schedule of intended send times at its share of
//! the rate; a request goes out at or after its intended time on the connection that has been
//! free longest (so the load rotates over every connection, as wrk2's per-connection rates do),
//! and its latency is measured from that intended time (wrk2's correction for coordinated
//! omission), with the uncorrected latency (from the actual send) kept beside it.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use crate::stats::Stats;
use crate::workload::{Failure, Progress, Request, Workload};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    Echo,
    Rate,
    Idle,
    Churn,
    Bulk,
    Http,
}

/// What every thread runs (the whole run's settings).
#[derive(Clone, Debug)]
pub struct Plan {
    pub scenario: Scenario,
    pub workload: Workload,
    pub addr: SocketAddr,
    pub warmup: Duration,
    pub duration: Duration,
    /// A fixed number of measured requests instead of a duration.
    pub requests: Option<u64>,
    pub timeout: Duration,
    /// How long a thread with replies outstanding polls without sleeping before it blocks
    /// (`--spin`; zero: block at once).
    pub spin: Duration,
}

/// One thread's part of the run.
#[derive(Clone, Debug)]
pub struct Share {
    pub active: usize,
    pub idle: usize,
    /// Requests per second this thread schedules (open loop only).
    pub rate: Option<f64>,
    pub quota: Option<u64>,
    /// Connection ids start here, so payloads differ across threads.
    pub first_id: u32,
}

/// How often timeouts and reconnections are looked at.
const HOUSEKEEPING: Duration = Duration::from_millis(10);
const RECONNECT_DELAY: Duration = Duration::from_millis(10);

enum State {
    Down { retry_at: Instant },
    Connecting { since: Instant },
    Ready,
    Busy,
}

struct Conn {
    id: u32,
    stream: Option<TcpStream>,
    state: State,
    request: Option<Request>,
    seq: u64,
    /// Where latency is measured from: the intended send time (open loop), the send time
    /// (closed loop), or the connect (churn).
    intended: Instant,
    sent_at: Instant,
    idle: bool,
    /// Requests this connection completed in the measured window.
    completed: u64,
}

pub struct Finished {
    pub stats: Stats,
    pub measured_from: Instant,
    pub ended: Instant,
}

struct Engine<'a> {
    plan: &'a Plan,
    share: Share,
    poll: Poll,
    conns: Vec<Conn>,
    stats: Stats,
    warmup: Stats,
    measure_from: Instant,
    end: Option<Instant>,
    issued: u64,
    /// Open loop: connections free to send, and scheduled requests waiting for one.
    free: VecDeque<usize>,
    backlog: VecDeque<Instant>,
    next_intended: Option<Instant>,
    interval: Duration,
    scratch: Vec<u8>,
    done: &'a AtomicU64,
    /// Connections with a request in flight (state Busy).
    busy: usize,
}

pub fn run(plan: &Plan, share: Share, start: Instant, done: &AtomicU64) -> io::Result<Finished> {
    // Every thread starts at the same instant; nothing is sent before it.
    std::thread::sleep(start.saturating_duration_since(Instant::now()));
    let measure_from = start + plan.warmup;
    let open_loop = plan.scenario == Scenario::Rate;
    let interval = share
        .rate
        .filter(|r| *r > 0.0)
        .map_or(Duration::ZERO, |r| Duration::from_secs_f64(1.0 / r));
    let total = share.active + share.idle;
    let mut engine = Engine {
        plan,
        poll: Poll::new()?,
        conns: (0..total)
            .map(|i| Conn {
                id: share.first_id + i as u32,
                stream: None,
                state: State::Down { retry_at: start },
                request: None,
                seq: 0,
                intended: start,
                sent_at: start,
                idle: i >= share.active,
                completed: 0,
            })
            .collect(),
        stats: Stats::new(),
        warmup: Stats::new(),
        measure_from,
        end: plan
            .requests
            .is_none()
            .then(|| measure_from + plan.duration),
        issued: 0,
        free: VecDeque::new(),
        backlog: VecDeque::new(),
        next_intended: open_loop.then_some(start),
        interval,
        scratch: vec![0u8; 64 * 1024],
        done,
        busy: 0,
        share,
    };
    engine.stats.idle_total = engine.share.idle as u64;
    for i in 0..total {
        engine.connect(i, start);
    }
    engine.event_loop()?;
    let ended = Instant::now();
    engine.stats.unsent = engine.backlog.len() as u64;
    engine.stats.idle_open = engine.count_open_idle();
    engine.stats.starved = engine
        .conns
        .iter()
        .filter(|c| !c.idle && c.completed == 0)
        .count() as u64;
    Ok(Finished {
        stats: engine.stats,
        measured_from: measure_from,
        ended,
    })
}

impl Engine<'_> {
    fn event_loop(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut housekeeping = Instant::now();
        loop {
            let now = Instant::now();
            if self.finished(now) {
                return Ok(());
            }
            self.release_scheduled(now);
            let wake = self.next_wake(now, housekeeping + HOUSEKEEPING);
            // Sub-millisecond pacing: a wait is asked in whole milliseconds rounded down,
            // and the last fraction is polled without sleeping.
            let wait = wake.saturating_duration_since(now);
            let wait = Duration::from_millis(wait.as_millis() as u64);
            self.wait(&mut events, now, wait)?;
            for event in events.iter() {
                let i = event.token().0;
                if matches!(self.conns[i].state, State::Connecting { .. }) {
                    self.check_connected(i);
                }
                if event.is_writable() && matches!(self.conns[i].state, State::Busy) {
                    self.flush(i);
                }
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    // A FIN already queued behind data gets no edge of its own: drain fully.
                    self.read(i, event.is_read_closed() || event.is_error());
                }
            }
            let now = Instant::now();
            if now >= housekeeping + HOUSEKEEPING {
                housekeeping = now;
                self.housekeeping(now);
            }
        }
    }

    /// Waits up to `wait` for events. While replies are outstanding it first polls without
    /// sleeping for up to `plan.spin`: a reply then is handled the moment it lands, without
    /// this thread's own wake-up (an interrupt and a reschedule, several microseconds) in its
    /// latency and in the closed loop's round trip.
    fn wait(&mut self, events: &mut Events, now: Instant, wait: Duration) -> io::Result<()> {
        let spin = if self.busy > 0 {
            self.plan.spin.min(wait)
        } else {
            Duration::ZERO
        };
        while !spin.is_zero() && now.elapsed() < spin {
            self.poll_once(events, Duration::ZERO)?;
            if !events.is_empty() {
                return Ok(());
            }
        }
        self.poll_once(events, wait.saturating_sub(spin))
    }

    fn poll_once(&mut self, events: &mut Events, timeout: Duration) -> io::Result<()> {
        match self.poll.poll(events, Some(timeout)) {
            Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
            _ => Ok(()),
        }
    }

    fn finished(&self, now: Instant) -> bool {
        match (self.end, self.share.quota) {
            (Some(end), _) => now >= end,
            (None, Some(quota)) => {
                let settled = self.stats.requests + self.stats.errors.total();
                settled >= quota
                    || (self.issued >= quota
                        && !self.conns.iter().any(|c| matches!(c.state, State::Busy)))
            }
            (None, None) => false,
        }
    }

    fn may_issue(&self, now: Instant) -> bool {
        self.end.is_none_or(|end| now < end)
            && self
                .share
                .quota
                .is_none_or(|q| now < self.measure_from || self.issued < q)
    }

    /// Open loop: every scheduled request whose time has come goes to a free connection,
    /// or waits in the backlog (its latency clock already running).
    fn release_scheduled(&mut self, now: Instant) {
        while let Some(at) = self.next_intended.filter(|&at| at <= now) {
            if !self.may_issue(at) {
                self.next_intended = None;
                break;
            }
            self.next_intended = Some(at + self.interval);
            if at >= self.measure_from {
                self.issued += 1;
            }
            match self.free.pop_front() {
                Some(i) => self.issue(i, at),
                None => self.backlog.push_back(at),
            }
        }
    }

    fn next_wake(&self, now: Instant, housekeeping: Instant) -> Instant {
        let mut wake = housekeeping;
        if let Some(at) = self.next_intended {
            wake = wake.min(at);
        }
        if let Some(end) = self.end {
            wake = wake.min(end);
        }
        wake.max(now)
    }

    fn connect(&mut self, i: usize, now: Instant) {
        let conn = &mut self.conns[i];
        conn.request = None;
        if let Some(mut old) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut old);
        }
        match TcpStream::connect(self.plan.addr) {
            Ok(mut stream) => {
                let registered = self.poll.registry().register(
                    &mut stream,
                    Token(i),
                    Interest::READABLE | Interest::WRITABLE,
                );
                if registered.is_err() {
                    self.fail_connect(i, now);
                    return;
                }
                let conn = &mut self.conns[i];
                conn.stream = Some(stream);
                conn.state = State::Connecting { since: now };
            }
            Err(_) => self.fail_connect(i, now),
        }
    }

    fn fail_connect(&mut self, i: usize, now: Instant) {
        self.stats_for(now).errors.connect += 1;
        let conn = &mut self.conns[i];
        conn.stream = None;
        conn.state = State::Down {
            retry_at: now + RECONNECT_DELAY,
        };
    }

    fn check_connected(&mut self, i: usize) {
        let now = Instant::now();
        let Some(stream) = self.conns[i].stream.as_ref() else {
            return;
        };
        match (stream.take_error(), stream.peer_addr()) {
            (Ok(None), Ok(_)) => {
                let _ = stream.set_nodelay(true);
                let since = match self.conns[i].state {
                    State::Connecting { since } => since,
                    _ => now,
                };
                self.stats_for(since).connects += 1;
                self.conns[i].state = State::Ready;
                self.on_ready(i, since);
            }
            (Ok(None), Err(e)) if e.kind() == io::ErrorKind::NotConnected => {} // not yet
            _ => self.fail_connect(i, now),
        }
    }

    /// A connection is free: what it does next depends on the scenario.
    fn on_ready(&mut self, i: usize, connected_since: Instant) {
        if self.conns[i].idle {
            return; // holds its connection open, sends nothing
        }
        let now = Instant::now();
        match self.plan.scenario {
            Scenario::Rate => match self.backlog.pop_front() {
                Some(at) => self.issue(i, at),
                None => self.free.push_back(i),
            },
            Scenario::Churn if self.may_issue(now) => self.issue(i, connected_since),
            _ if self.may_issue(now) => {
                if now >= self.measure_from {
                    self.issued += 1;
                }
                self.issue(i, now);
            }
            _ => {}
        }
    }

    fn issue(&mut self, i: usize, intended: Instant) {
        let conn = &mut self.conns[i];
        conn.request = Some(self.plan.workload.request(conn.id, conn.seq));
        conn.seq += 1;
        conn.intended = intended;
        conn.sent_at = Instant::now();
        conn.state = State::Busy;
        self.busy += 1;
        if self.plan.scenario == Scenario::Churn && intended >= self.measure_from {
            self.issued += 1;
        }
        self.flush(i);
    }

    fn flush(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        let (Some(stream), Some(request)) = (conn.stream.as_mut(), conn.request.as_mut()) else {
            return;
        };
        while let Some(chunk) = request.unsent() {
            match stream.write(chunk) {
                Ok(n) => request.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    let now = Instant::now();
                    self.fail(i, now, ErrorClass::Reset);
                    return;
                }
            }
        }
    }

    fn read(&mut self, i: usize, to_eof: bool) {
        loop {
            if matches!(
                self.conns[i].state,
                State::Connecting { .. } | State::Down { .. }
            ) {
                return;
            }
            let Some(stream) = self.conns[i].stream.as_mut() else {
                return;
            };
            let n = match stream.read(&mut self.scratch) {
                Ok(0) => {
                    self.fail(i, Instant::now(), ErrorClass::Reset);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.fail(i, Instant::now(), ErrorClass::Reset);
                    return;
                }
            };
            let now = Instant::now();
            if now >= self.measure_from {
                self.stats.bytes_read += n as u64;
            }
            let Some(request) = self.conns[i].request.as_mut() else {
                self.fail(i, now, ErrorClass::Protocol); // bytes nobody asked for
                return;
            };
            match request.receive(&self.scratch[..n]) {
                Ok(Progress::More) => {}
                Ok(Progress::Done) => self.complete(i, now),
                Err(Failure::Mismatch) => return self.fail(i, now, ErrorClass::Mismatch),
                Err(Failure::Protocol) => return self.fail(i, now, ErrorClass::Protocol),
            }
            if n < self.scratch.len() && !to_eof {
                return; // a short read: drained (epoll raises a new edge for new bytes)
            }
        }
    }

    fn complete(&mut self, i: usize, now: Instant) {
        let conn = &mut self.conns[i];
        let request = conn
            .request
            .take()
            .expect("a completed request was in flight");
        let (intended, sent_at) = (conn.intended, conn.sent_at);
        conn.state = State::Ready;
        self.busy -= 1;
        let stats = if intended >= self.measure_from {
            self.done.fetch_add(1, Ordering::Relaxed);
            conn.completed += 1;
            &mut self.stats
        } else {
            &mut self.warmup
        };
        stats.requests += 1;
        stats.up_bytes += request.up_bytes;
        stats.down_bytes += request.down_bytes;
        let micros = |d: Duration| (d.as_micros() as u64).max(1);
        stats.latency.saturating_record(micros(now - intended));
        stats.uncorrected.saturating_record(micros(now - sent_at));
        if self.plan.scenario == Scenario::Churn {
            self.connect(i, now);
        } else {
            self.on_ready(i, now);
        }
    }

    fn fail(&mut self, i: usize, now: Instant, class: ErrorClass) {
        let from = match self.conns[i].state {
            State::Busy => {
                self.busy -= 1;
                self.conns[i].intended
            }
            _ => now,
        };
        let errors = &mut self.stats_for(from).errors;
        match class {
            ErrorClass::Reset => errors.reset += 1,
            ErrorClass::Timeout => errors.timeout += 1,
            ErrorClass::Mismatch => errors.mismatch += 1,
            ErrorClass::Protocol => errors.protocol += 1,
        }
        self.free.retain(|&f| f != i);
        let conn = &mut self.conns[i];
        if let Some(mut stream) = conn.stream.take() {
            let _ = self.poll.registry().deregister(&mut stream);
        }
        conn.request = None;
        conn.state = State::Down {
            retry_at: now + RECONNECT_DELAY,
        };
    }

    fn housekeeping(&mut self, now: Instant) {
        for i in 0..self.conns.len() {
            match self.conns[i].state {
                State::Busy if now >= self.conns[i].sent_at + self.plan.timeout => {
                    self.fail(i, now, ErrorClass::Timeout)
                }
                State::Connecting { since } if now >= since + self.plan.timeout => {
                    self.fail_connect(i, now)
                }
                State::Down { retry_at } if now >= retry_at && self.may_issue(now) => {
                    self.connect(i, now)
                }
                _ => {}
            }
        }
    }

    fn stats_for(&mut self, at: Instant) -> &mut Stats {
        if at >= self.measure_from {
            &mut self.stats
        } else {
            &mut self.warmup
        }
    }

    /// Idle connections still open: a read that would block means the server kept it.
    fn count_open_idle(&mut self) -> u64 {
        let mut open = 0;
        for conn in self.conns.iter_mut().filter(|c| c.idle) {
            if let (Some(stream), State::Ready) = (conn.stream.as_mut(), &conn.state) {
                let mut byte = [0u8; 1];
                if matches!(stream.read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
                {
                    open += 1;
                }
            }
        }
        open
    }
}

#[derive(Clone, Copy)]
enum ErrorClass {
    Reset,
    Timeout,
    Mismatch,
    Protocol,
}
