//! `uring`: io_uring with one-shot accept, recv and send.
//!
//! Instead of asking "is this socket ready?", the loop hands the kernel whole operations
//! (accept on the listener, recv into this buffer, send these bytes) and later reaps their
//! completions. Every request is one-shot: each completion is followed by a new submission.
//! Submissions pile up in the submission queue and reach the kernel in one `io_uring_enter`
//! per turn of the loop, together with the wait for the next completion.
//!
//! Each connection owns a 16 KiB receive buffer for as long as a recv may write into it (an
//! idle connection always has one recv in flight: 16 KiB per connection is the price of
//! one-shot recv), plus at most the 64 KiB high-water mark of replies. A short send is
//! resubmitted for the remainder; an error (ECONNRESET, EPIPE, ECANCELED) ends that connection
//! only, and its slot is freed once none of its requests is still in the kernel.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::{opcode, types};

use super::{run_loops, Config};
use crate::completion::{
    self, follow_up, Backlog, Conn, ConnFd, Op, Slots, StopSignal, Sweep, Waiter,
};
use crate::listener::{is_exhaustion, BurstLog};
use crate::on_target;

const RECV_SIZE: usize = 16 * 1024;

pub fn run(listeners: Vec<TcpListener>, config: &Config) -> io::Result<()> {
    run_loops(listeners, |listener| event_loop(listener, config))
}

fn event_loop(listener: TcpListener, config: &Config) -> io::Result<()> {
    let mut ring = completion::ring(config.ring)?;
    let (mut submitter, mut sq, mut cq) = ring.split();
    completion::prepare(&mut submitter, &config.ring)?;
    let waiter = Waiter::new(&config.ring);
    let listen_fd = types::Fd(listener.as_raw_fd());
    let accept = || {
        opcode::Accept::new(listen_fd, std::ptr::null_mut(), std::ptr::null_mut())
            .build()
            .user_data(Op::Accept.encode())
    };
    let pause = types::Timespec::new().nsec(100_000_000);
    let mut backlog = Backlog::default();
    let mut conns = Slots::new(config.idle_timeout, config.ring.zerocopy);
    let mut sweep = Sweep::new(config.idle_timeout);
    // Receive buffer i belongs to slot i; it never moves while a recv may write into it.
    let mut buffers: Vec<Box<[u8]>> = Vec::new();
    let mut exhaustion = BurstLog::default();
    let stop = StopSignal::new()?;
    backlog.push(&submitter, &mut sq, stop.poll());
    backlog.push(&submitter, &mut sq, accept());
    loop {
        backlog.drain_into(&mut sq);
        waiter.submit_and_wait(&submitter)?;
        cq.sync();
        for cqe in &mut cq {
            let result = cqe.result();
            completion::log_unexpected("uring", result);
            let slot = match Op::decode(cqe.user_data()) {
                Op::Stop => {
                    stop.completed(); // ends the process when SIGTERM or SIGINT came
                    backlog.push(&submitter, &mut sq, stop.poll());
                    continue;
                }
                Op::Sweep => {
                    // Deadlines (crate::closing): expired connections are failed, then
                    // followed up like any other, which cancels their recv and frees them.
                    for slot in sweep.completed(&mut conns) {
                        let buffer = buffers[slot].as_mut_ptr();
                        follow_up(
                            &mut conns,
                            slot,
                            &submitter,
                            &mut sq,
                            &mut backlog,
                            false,
                            |t| {
                                on_target!(t, |fd| opcode::Recv::new(fd, buffer, RECV_SIZE as u32)
                                    .build())
                            },
                        );
                    }
                    continue;
                }
                Op::Accept if result >= 0 => {
                    exhaustion.clear();
                    backlog.push(&submitter, &mut sq, accept());
                    // SAFETY: a successful accept completion carries a new descriptor we own.
                    let fd = unsafe { OwnedFd::from_raw_fd(result) };
                    let _ = socket2::SockRef::from(&fd).set_tcp_nodelay(true);
                    let slot = conns.insert(Conn::new(
                        ConnFd::Owned(fd),
                        config.protocol,
                        config.idle_timeout,
                    ));
                    if slot == buffers.len() {
                        buffers.push(vec![0u8; RECV_SIZE].into_boxed_slice());
                    }
                    slot
                }
                Op::Accept if is_exhaustion(&io::Error::from_raw_os_error(-result)) => {
                    exhaustion.hit(|| {
                        format!(
                            "uring: accept: {}; accepting again in 100 ms",
                            io::Error::from_raw_os_error(-result)
                        )
                    });
                    let retry = opcode::Timeout::new(&pause).build();
                    backlog.push(
                        &submitter,
                        &mut sq,
                        retry.user_data(Op::AcceptRetry.encode()),
                    );
                    continue;
                }
                Op::Accept | Op::AcceptRetry if !crate::signals::stopping() => {
                    backlog.push(&submitter, &mut sq, accept());
                    continue;
                }
                Op::Accept | Op::AcceptRetry => continue, // the listener was shut down
                Op::Quiet => continue, // a direct descriptor's close (not used here)
                Op::Recv(slot) => {
                    let Some(conn) = conns.get_mut(slot) else {
                        continue;
                    };
                    conn.recv_armed = false;
                    match result {
                        0 => conn.eof = true,
                        n if n > 0 => conn.received(&buffers[slot][..n as usize]),
                        _ => conn.fail(),
                    }
                    slot
                }
                Op::Send(slot) => {
                    let Some(conn) = conns.get_mut(slot) else {
                        continue;
                    };
                    // Nothing is sent from a provided buffer here: no buffer comes back.
                    let _ = conn.send_completion(result, cqe.flags());
                    slot
                }
                Op::Cancel(slot) => {
                    let Some(conn) = conns.get_mut(slot) else {
                        continue;
                    };
                    conn.cancel_armed = false;
                    slot
                }
            };
            let buffer = buffers[slot].as_mut_ptr();
            follow_up(
                &mut conns,
                slot,
                &submitter,
                &mut sq,
                &mut backlog,
                false,
                |t| {
                    on_target!(t, |fd| opcode::Recv::new(fd, buffer, RECV_SIZE as u32)
                        .build())
                },
            );
        }
        sweep.arm_if_needed(&conns, &submitter, &mut sq, &mut backlog);
    }
}
