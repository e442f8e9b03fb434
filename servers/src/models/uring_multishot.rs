//! `uring-multishot`: io_uring with multishot accept and multishot recv from a provided
//! buffer ring.
//!
//! One accept request yields a completion per connection, and one recv request per connection
//! yields a completion per arrival, each naming the buffer the kernel picked from a ring of
//! 1024 buffers of 4 KiB (4 MiB per loop, allocated up front, whatever the number of
//! connections). The bytes are
//! handed to the protocol and the buffer goes straight back to the ring. A multishot request
//! ends with a completion without IORING_CQE_F_MORE (out of buffers: ENOBUFS, EOF, an error,
//! or our cancel) and is then re-armed if the connection still wants it. Sends are one-shot,
//! as in `uring`. Per connection: no receive buffer at all while idle, at most the 64 KiB
//! high-water mark of replies, and the input still held back by it (bounded by the arrivals
//! completed before a pausing cancel takes effect).

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use io_uring::{cqueue, opcode, squeue, types};

use super::{run_loops, Config};
use crate::completion::{
    self, follow_up, Backlog, BufRing, Conn, ConnFd, Op, Slots, StopSignal, Sweep, Waiter,
};
use crate::listener::{is_exhaustion, BurstLog};
use crate::on_target;

const BUFFERS: u16 = 1024;
const BUFFER_SIZE: usize = 4096;
const GROUP: u16 = 0;

pub fn run(listeners: Vec<TcpListener>, config: &Config) -> io::Result<()> {
    run_loops(listeners, |listener| event_loop(listener, config))
}

fn event_loop(listener: TcpListener, config: &Config) -> io::Result<()> {
    let mut ring = completion::ring(config.ring)?;
    let (mut submitter, mut sq, mut cq) = ring.split();
    completion::prepare(&mut submitter, &config.ring)?;
    let waiter = Waiter::new(&config.ring);
    let mut buffers = BufRing::new(&submitter, BUFFERS, BUFFER_SIZE, GROUP)?;
    let listen_fd = types::Fd(listener.as_raw_fd());
    let fixed = config.ring.fixed_files;
    if fixed {
        // A direct descriptor cannot be given to setsockopt(2): accepted sockets inherit
        // TCP_NODELAY from the listener instead.
        socket2::SockRef::from(&listener).set_tcp_nodelay(true)?;
    }
    let accept = || {
        opcode::AcceptMulti::new(listen_fd)
            .allocate_file_index(fixed)
            .build()
            .user_data(Op::Accept.encode())
    };
    let bundle = config.ring.bundle;
    let recv = |t| {
        if bundle {
            on_target!(t, |fd| opcode::RecvMultiBundle::new(fd, GROUP).build())
        } else {
            on_target!(t, |fd| opcode::RecvMulti::new(fd, GROUP).build())
                .flags(squeue::Flags::BUFFER_SELECT)
        }
    };
    let in_place = config.ring.send_in_place;
    // Buffers held by echoes sent in place. A client that stops reading holds its buffer
    // until its send completes: at most half the ring is lent so, the rest copies, so the
    // ring never runs dry for the other connections.
    let mut lent = 0usize;
    // The buffers one recv completion filled (several with --bundle), reused.
    let mut filled = Vec::new();
    let pause = types::Timespec::new().nsec(100_000_000);
    let mut backlog = Backlog::default();
    let mut conns = Slots::new(config.idle_timeout, config.ring.zerocopy);
    let mut sweep = Sweep::new(config.idle_timeout);
    let mut exhaustion = BurstLog::default();
    // The multishot accept was cancelled for an exhaustion pause.
    let mut accept_paused = false;
    let stop = StopSignal::new()?;
    backlog.push(&submitter, &mut sq, stop.poll());
    backlog.push(&submitter, &mut sq, accept());
    loop {
        backlog.drain_into(&mut sq);
        waiter.submit_and_wait(&submitter)?;
        cq.sync();
        for cqe in &mut cq {
            let (result, more) = (cqe.result(), cqueue::more(cqe.flags()));
            completion::log_unexpected("uring-multishot", result);
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
                        follow_up(
                            &mut conns,
                            slot,
                            &submitter,
                            &mut sq,
                            &mut backlog,
                            true,
                            recv,
                        );
                    }
                    continue;
                }
                Op::Accept => {
                    let retry = opcode::Timeout::new(&pause)
                        .build()
                        .user_data(Op::AcceptRetry.encode());
                    if is_exhaustion(&io::Error::from_raw_os_error(-result)) {
                        exhaustion.hit(|| {
                            format!(
                                "uring-multishot: accept: {}; accepting again in 100 ms",
                                io::Error::from_raw_os_error(-result)
                            )
                        });
                        if !more {
                            backlog.push(&submitter, &mut sq, retry);
                        } else if !accept_paused {
                            // Out of direct descriptors, the multishot accept goes on and fails
                            // again at once for every waiting client: stop it, and accept
                            // again once the pause is over.
                            accept_paused = true;
                            let cancel = opcode::AsyncCancel::new(Op::Accept.encode()).build();
                            backlog.push(&submitter, &mut sq, cancel.user_data(Op::Quiet.encode()));
                        }
                        continue;
                    }
                    if !more && !crate::signals::stopping() {
                        if accept_paused {
                            backlog.push(&submitter, &mut sq, retry); // our cancel ended it
                        } else {
                            backlog.push(&submitter, &mut sq, accept()); // the multishot ended: re-arm
                        }
                    }
                    if result < 0 {
                        continue;
                    }
                    exhaustion.clear();
                    let fd = if fixed {
                        ConnFd::Fixed(result as u32) // an index into the registered files
                    } else {
                        // SAFETY: a successful accept completion carries a new descriptor we own.
                        let fd = unsafe { OwnedFd::from_raw_fd(result) };
                        let _ = socket2::SockRef::from(&fd).set_tcp_nodelay(true);
                        ConnFd::Owned(fd)
                    };
                    conns.insert(Conn::new(fd, config.protocol, config.idle_timeout))
                }
                Op::AcceptRetry if !crate::signals::stopping() => {
                    accept_paused = false;
                    backlog.push(&submitter, &mut sq, accept());
                    continue;
                }
                Op::AcceptRetry => continue,
                // A direct descriptor's shutdown or close failed: the client is gone already.
                Op::Quiet => continue,
                Op::Recv(slot) => {
                    if let Some(first) = cqueue::buffer_select(cqe.flags()) {
                        let len = result.max(0) as usize;
                        match conns.get_mut(slot) {
                            Some(conn)
                                if in_place
                                    && lent < BUFFERS as usize / 2
                                    && len > 0
                                    && len <= buffers.size()
                                    && conn.can_send_in_place() =>
                            {
                                // Echo: the reply is these bytes; the buffer comes back to
                                // the ring when its send completes.
                                let bytes = buffers.buffer(first, len);
                                conn.echo_in_place(first, bytes.as_ptr(), len);
                                lent += 1;
                            }
                            conn => {
                                filled.clear();
                                buffers.filled(first, len, &mut filled);
                                if let Some(conn) = conn.filter(|_| len > 0) {
                                    let mut left = len;
                                    for &bid in &filled {
                                        let piece = left.min(buffers.size());
                                        conn.received(buffers.buffer(bid, piece));
                                        left -= piece;
                                    }
                                }
                                for &bid in &filled {
                                    buffers.give_back(bid);
                                }
                            }
                        }
                    }
                    let Some(conn) = conns.get_mut(slot) else {
                        continue;
                    };
                    if !more {
                        conn.recv_armed = false;
                        match -result {
                            0 => conn.eof = true,                 // a final completion with 0 bytes: EOF
                            libc::ENOBUFS | libc::ECANCELED => {} // re-armed below if wanted
                            errno if errno > 0 => conn.fail(),
                            _ => {} // data, then the end of this multishot: re-arm
                        }
                    }
                    slot
                }
                Op::Send(slot) => {
                    let Some(conn) = conns.get_mut(slot) else {
                        continue;
                    };
                    if let Some(bid) = conn.send_completion(result, cqe.flags()) {
                        buffers.give_back(bid); // an echo sent in place, all of it
                        lent -= 1;
                    }
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
            follow_up(
                &mut conns,
                slot,
                &submitter,
                &mut sq,
                &mut backlog,
                true,
                recv,
            );
        }
        sweep.arm_if_needed(&conns, &submitter, &mut sq, &mut backlog);
    }
}
