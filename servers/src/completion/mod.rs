//! What the io_uring models share: the ring set up from the command line, a submission path
//! that never drops a request, the support check, what a completion is about ([`Op`]), the
//! stop signal as a completion, and (in the submodules) the connection state of a completion
//! model and the provided buffer ring.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use io_uring::{opcode, squeue, types, IoUring, SubmissionQueue, Submitter};

mod buf_ring;
mod conn;

pub use buf_ring::BufRing;
pub use conn::{follow_up, Conn, ConnFd, Slots, Target, ZEROCOPY_MIN};

/// Submission queue entries per ring; the completion queue is twice that, and the kernel
/// keeps overflowing completions rather than dropping them (IORING_FEAT_NODROP, 5.5).
pub const RING_ENTRIES: u32 = 4096;

/// When the kernel runs completion work ("task work": the recv that data arrival set off,
/// the CQE it posts) for this ring's thread (`--taskrun`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TaskRun {
    /// Only when the loop enters the kernel to wait (IORING_SETUP_DEFER_TASKRUN with
    /// SINGLE_ISSUER, 6.1): batched, never interrupting the loop.
    Defer,
    /// At the next transition to the kernel, without an interrupt (COOP_TASKRUN with
    /// TASKRUN_FLAG, 5.19).
    Coop,
    /// The kernel's default: the thread is interrupted to run it as soon as it is queued.
    Plain,
}

impl TaskRun {
    pub fn name(self) -> &'static str {
        match self {
            TaskRun::Defer => "defer",
            TaskRun::Coop => "coop",
            TaskRun::Plain => "plain",
        }
    }

    /// The Linux version that has it.
    fn needs(self) -> (u32, u32) {
        match self {
            TaskRun::Defer => (6, 1),
            TaskRun::Coop => (5, 19),
            TaskRun::Plain => (5, 1),
        }
    }
}

/// How many completions a wait asks for before returning (`--batch N`) gets this long.
pub const BATCH_WAIT_US: u32 = 50;

/// How the ring is set up and driven (`--sqpoll`, `--taskrun`, `--plain-ring-fd`, `--batch`).
#[derive(Clone, Copy, Debug)]
pub struct RingOptions {
    pub sqpoll: bool,
    /// `None`: the best this kernel has (see [`RingOptions::taskrun`]).
    pub taskrun: Option<TaskRun>,
    /// Enter the ring by its descriptor, not by a registered index (IORING_REGISTER_RING_FDS,
    /// 5.18, which spares the kernel a descriptor lookup on every `io_uring_enter`).
    pub plain_ring_fd: bool,
    /// Completions each wait asks for: more than one waits up to [`BATCH_WAIT_US`] for them
    /// (IORING_FEAT_MIN_TIMEOUT, 6.12), then returns with what it has.
    pub batch: u32,
    /// Accept into direct descriptors (`--fixed-files`: a sparse registered file table,
    /// multishot accept allocating from it; 5.19).
    pub fixed_files: bool,
    /// Send replies of at least [`conn::ZEROCOPY_MIN`] bytes with IORING_OP_SEND_ZC
    /// (`--zerocopy`, 6.0): the kernel pins our pages instead of copying them, and says in a
    /// second completion when it has let go of them.
    pub zerocopy: bool,
    /// `uring-multishot`, echo: send a reply straight from the provided buffer it arrived
    /// in when nothing else is waiting to be sent (`--send-in-place`: no copy into our own
    /// output buffer).
    pub send_in_place: bool,
    /// `uring-multishot`: one multishot recv completion may fill several provided buffers
    /// (`--bundle`, IORING_RECVSEND_BUNDLE, 6.10).
    pub bundle: bool,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions {
            sqpoll: false,
            taskrun: None,
            plain_ring_fd: false,
            batch: 1,
            fixed_files: false,
            zerocopy: false,
            send_in_place: false,
            bundle: false,
        }
    }
}

impl RingOptions {
    /// The task-run mode in force: the one asked for, or the best this kernel has (with
    /// SQPOLL the kernel thread runs it: plain).
    pub fn taskrun(&self) -> TaskRun {
        if let Some(mode) = self.taskrun {
            return mode;
        }
        if self.sqpoll {
            return TaskRun::Plain;
        }
        let here = kernel_version();
        [TaskRun::Defer, TaskRun::Coop]
            .into_iter()
            .find(|mode| here >= mode.needs())
            .unwrap_or(TaskRun::Plain)
    }

    /// A combination the kernel refuses (`Err((2, why))`, a usage error) or a feature this
    /// kernel lacks (`Err((3, why))`, unsupported).
    pub fn check(&self) -> Result<(), (u8, String)> {
        if self.sqpoll && self.taskrun == Some(TaskRun::Defer) {
            return Err((
                2,
                "--sqpoll and --taskrun defer exclude each other (the kernel refuses DEFER_TASKRUN with SQPOLL)".into(),
            ));
        }
        let here = kernel_version();
        let mode = self.taskrun();
        if here < mode.needs() {
            let (major, minor) = mode.needs();
            return Err((
                3,
                format!(
                    "--taskrun {} needs Linux {major}.{minor}, this is {}.{}",
                    mode.name(),
                    here.0,
                    here.1
                ),
            ));
        }
        if self.fixed_files && here < (5, 19) {
            return Err((
                3,
                format!(
                    "--fixed-files needs multishot accept into direct descriptors (Linux 5.19), this is {}.{}",
                    here.0, here.1
                ),
            ));
        }
        for (on, flag, what, needs) in [
            (self.zerocopy, "--zerocopy", "IORING_OP_SEND_ZC", (6, 0)),
            (
                self.bundle,
                "--bundle",
                "recv bundles (IORING_RECVSEND_BUNDLE)",
                (6, 10),
            ),
        ] {
            if on && here < needs {
                return Err((
                    3,
                    format!(
                        "{flag} needs {what}, Linux {}.{}; this is {}.{}",
                        needs.0, needs.1, here.0, here.1
                    ),
                ));
            }
        }
        if self.batch > 1 && here < (6, 12) {
            return Err((
                3,
                format!(
                    "--batch needs a minimum wait time (IORING_FEAT_MIN_TIMEOUT, Linux 6.12), this is {}.{}",
                    here.0, here.1
                ),
            ));
        }
        Ok(())
    }

    /// One line for the log: what the ring runs with.
    pub fn describe(&self) -> String {
        let extras: String = [
            (self.zerocopy, ", zero-copy sends"),
            (self.send_in_place, ", echo sent in place"),
            (self.bundle, ", recv bundles"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, what)| *what)
        .collect();
        format!(
            "taskrun {}{}{}{extras}, ring fd {}, wait for {} completion{}",
            self.taskrun().name(),
            if self.sqpoll { ", sqpoll" } else { "" },
            if self.fixed_files {
                ", direct descriptors"
            } else {
                ""
            },
            if self.plain_ring_fd {
                "plain"
            } else {
                "registered"
            },
            self.batch,
            if self.batch > 1 {
                format!("s or {BATCH_WAIT_US} us")
            } else {
                String::new()
            }
        )
    }
}

pub fn ring(options: RingOptions) -> io::Result<IoUring> {
    let mut builder = IoUring::builder();
    if options.sqpoll {
        // A kernel thread polls the submission queue, so submitting needs no syscall while
        // it is awake; it sleeps after 1 s without work. Its CPU is charged to this process:
        // it is one of its threads (iou-sqp-PID in /proc/PID/task since 5.12).
        builder.setup_sqpoll(1000);
    }
    match options.taskrun() {
        // Completions are processed only when this thread asks (io_uring_enter with
        // GETEVENTS), not by interrupting it; requires a single issuing thread (6.1).
        TaskRun::Defer => builder.setup_single_issuer().setup_defer_taskrun(),
        // No interrupt either, but run at any transition into the kernel (5.19).
        TaskRun::Coop => builder.setup_coop_taskrun().setup_taskrun_flag(),
        TaskRun::Plain => &mut builder,
    };
    builder.build(RING_ENTRIES)
}

/// What the loop does with its submitter before the first submission: register the ring's
/// descriptor unless `--plain-ring-fd`, and with `--fixed-files` a sparse file table as large
/// as RLIMIT_NOFILE allows (the kernel's own bound for it).
pub fn prepare(submitter: &mut Submitter, options: &RingOptions) -> io::Result<()> {
    if !options.plain_ring_fd {
        submitter.register_ring_fd()?;
    }
    if options.fixed_files {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into `limit`, a valid rlimit.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
        submitter.register_files_sparse(limit.rlim_cur.min(1 << 20) as u32)?;
    }
    Ok(())
}

/// How the loop waits: for one completion, or for `--batch` of them for at most
/// [`BATCH_WAIT_US`] once the first is there.
pub struct Waiter {
    batch: usize,
    /// With a minimum wait the kernel needs an overall timeout too, or an idle wait returns
    /// at every minimum wait (it spun at 20% of a CPU with nothing to do): one second, after
    /// which an idle loop simply waits again.
    idle: types::Timespec,
}

impl Waiter {
    pub fn new(options: &RingOptions) -> Waiter {
        Waiter {
            batch: options.batch.max(1) as usize,
            idle: types::Timespec::new().sec(1),
        }
    }

    /// Submits and waits. EINTR, EBUSY (completions must be reaped first) and ETIME are
    /// not errors: the loop reaps and comes back.
    pub fn submit_and_wait(&self, submitter: &Submitter) -> io::Result<()> {
        let result = if self.batch > 1 {
            let args = types::SubmitArgs::new()
                .min_wait_usec(BATCH_WAIT_US)
                .timespec(&self.idle);
            submitter.submit_with_args(self.batch, &args)
        } else {
            submitter.submit_and_wait(1)
        };
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EBUSY | libc::ETIME)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Whether this machine can run io_uring (and, for `multishot`, multishot recv with a
/// provided buffer ring, Linux 6.0).
pub fn support(multishot: bool) -> Result<(), String> {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if let Err(e) = IoUring::new(8) {
        return Err(if disabled != 0 {
            format!("io_uring is disabled (kernel.io_uring_disabled = {disabled}): {e}")
        } else {
            format!("io_uring_setup failed: {e} (kernel without io_uring, or a seccomp filter)")
        });
    }
    let (major, minor) = kernel_version();
    let (need, what) = if multishot {
        ((6, 0), "multishot recv with a provided buffer ring")
    } else {
        ((5, 6), "io_uring accept, recv and send")
    };
    if (major, minor) < need {
        return Err(format!(
            "{what} needs Linux {}.{}, this is {major}.{minor}",
            need.0, need.1
        ));
    }
    Ok(())
}

fn kernel_version() -> (u32, u32) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Submissions that did not fit yet: the queue was full and the kernel busy. They go first
/// at the next turn of the loop; none is ever dropped.
#[derive(Default)]
pub struct Backlog(VecDeque<squeue::Entry>);

impl Backlog {
    /// Queues `entry`; when the queue is full, submits what it holds and tries again, and
    /// keeps the entry for later if the kernel cannot take more now (EBUSY).
    pub fn push(&mut self, submitter: &Submitter, sq: &mut SubmissionQueue, entry: squeue::Entry) {
        if !self.0.is_empty() {
            self.0.push_back(entry);
            return;
        }
        // SAFETY (both pushes): every buffer an entry points to is owned by a connection or
        // by the loop and stays put until the entry's completion is handled.
        if unsafe { sq.push(&entry) }.is_ok() {
            return;
        }
        sq.sync();
        if submitter.submit().is_ok() {
            sq.sync();
            if unsafe { sq.push(&entry) }.is_ok() {
                return;
            }
        }
        self.0.push_back(entry);
    }

    /// Moves waiting entries into the queue, as many as fit.
    pub fn drain_into(&mut self, sq: &mut SubmissionQueue) {
        while let Some(entry) = self.0.front() {
            // SAFETY: as in `push`.
            if unsafe { sq.push(entry) }.is_err() {
                break;
            }
            self.0.pop_front();
        }
        sq.sync();
    }
}

/// Logs a completion error unless it is a client leaving or a cancellation we asked for.
pub fn log_unexpected(model: &str, result: i32) {
    if result < 0
        && !is_disconnect(-result)
        && !matches!(
            -result,
            libc::ETIME | libc::ENOENT | libc::EALREADY | libc::ENOBUFS
        )
    {
        eprintln!(
            "{model}: completion error: {}",
            io::Error::from_raw_os_error(-result)
        );
    }
}

/// What a completion is about: packed into `user_data` as slot << 3 | kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Accept,
    /// The accept pause after EMFILE ended.
    AcceptRetry,
    Recv(usize),
    Send(usize),
    /// The AsyncCancel of a connection's recv. It counts as in flight for its slot: were the
    /// slot freed and reused first, the cancel could hit the new connection's recv.
    Cancel(usize),
    /// The poll on the stop signals' signalfd ([`StopSignal`]).
    Stop,
    /// The timeout after which deadlines are checked ([`Sweep`]).
    Sweep,
    /// A submission whose completion only comes when it fails (IOSQE_CQE_SKIP_SUCCESS: the
    /// shutdown and close of a direct descriptor); nothing follows it.
    Quiet,
}

impl Op {
    pub fn encode(self) -> u64 {
        match self {
            Op::Accept => 0,
            Op::AcceptRetry => 1,
            Op::Cancel(slot) => (slot as u64) << 3 | 2,
            Op::Recv(slot) => (slot as u64) << 3 | 3,
            Op::Send(slot) => (slot as u64) << 3 | 4,
            Op::Stop => 5,
            Op::Sweep => 6,
            Op::Quiet => 7,
        }
    }

    pub fn decode(data: u64) -> Op {
        let slot = (data >> 3) as usize;
        match data & 7 {
            0 => Op::Accept,
            1 => Op::AcceptRetry,
            2 => Op::Cancel(slot),
            3 => Op::Recv(slot),
            4 => Op::Send(slot),
            5 => Op::Stop,
            6 => Op::Sweep,
            _ => Op::Quiet,
        }
    }
}

/// The periodic check of deadlines (crate::closing) as a completion: a timeout kept in the
/// ring only while some connection can expire, so a server without `--idle-timeout` and
/// without lingering closes submits none.
pub struct Sweep {
    every: types::Timespec,
    armed: bool,
}

impl Sweep {
    pub fn new(idle_timeout: Option<std::time::Duration>) -> Sweep {
        Sweep {
            every: types::Timespec::from(crate::closing::sweep_interval(idle_timeout)),
            armed: false,
        }
    }

    /// After the completions of a turn: arms the timeout if deadlines need it. `self` must
    /// live as long as the loop (the kernel reads `every` when the entry is submitted).
    pub fn arm_if_needed(
        &mut self,
        slots: &Slots,
        submitter: &Submitter,
        sq: &mut SubmissionQueue,
        backlog: &mut Backlog,
    ) {
        if !self.armed && slots.has_deadlines() {
            self.armed = true;
            let timeout = opcode::Timeout::new(&self.every).build();
            backlog.push(submitter, sq, timeout.user_data(Op::Sweep.encode()));
        }
    }

    /// The timeout completed: the slots to fail and follow up.
    pub fn completed(&mut self, slots: &mut Slots) -> Vec<usize> {
        self.armed = false;
        slots.expire()
    }
}

/// SIGTERM and SIGINT as a completion: a poll on a signalfd, kept armed in the ring, so the
/// loop hears the stop while it waits in io_uring_enter (see `signals::Stop::InBand`).
pub struct StopSignal {
    fd: OwnedFd,
}

impl StopSignal {
    pub fn new() -> io::Result<StopSignal> {
        Ok(StopSignal {
            fd: crate::signals::stop_signalfd()?,
        })
    }

    /// The poll to (re-)arm: one-shot, so it is armed again after each completion.
    pub fn poll(&self) -> squeue::Entry {
        opcode::PollAdd::new(types::Fd(self.fd.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(Op::Stop.encode())
    }

    /// After the poll completed: ends the process if a stop signal is pending; otherwise
    /// (another loop took it) returns, and the caller re-arms the poll.
    pub fn completed(&self) {
        crate::signals::stop_if_signalled(&self.fd);
    }
}

/// True for completion errors that mean "the client left" (not a server fault).
pub fn is_disconnect(errno: i32) -> bool {
    matches!(
        errno,
        libc::ECONNRESET | libc::EPIPE | libc::ECONNABORTED | libc::ETIMEDOUT | libc::ECANCELED
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for op in [
            Op::Accept,
            Op::AcceptRetry,
            Op::Cancel(3),
            Op::Recv(0),
            Op::Send(7),
            Op::Recv(1 << 40),
            Op::Sweep,
            Op::Quiet,
        ] {
            assert_eq!(Op::decode(op.encode()), op);
        }
    }
}
