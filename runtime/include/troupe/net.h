// troupe/net.h: sockets and pipes on top of troupe/io.h. This module makes
// the descriptors (TCP and UDP sockets, Unix stream and datagram sockets,
// socket pairs, pipes), always non-blocking and close-on-exec from the
// system call that creates them, registers them with the runtime's reactor
// as tr_io, and parses and formats addresses. Moving bytes is io.h's job
// (tr_read, tr_write_all, tr_recvfrom, ...); the few awaitables here
// (connect, accept, sendto/recvfrom with a tr_addr) are thin layers over it.
//
// Addresses are numeric: "127.0.0.1:8080", "[::1]:80", "[fe80::1%eth0]:80",
// ":8080" (every IPv4 address), "unix:/run/x.sock", "unix:@name" (Linux
// abstract namespace). A host name ("localhost:80") is TR_ENAME here:
// resolve it with tr_resolve (troupe/blocking.h), which does not block a
// worker.
//
// Ownership: every function that hands back a tr_io hands back one
// reference, which the caller releases with tr_io_release (or closes with
// tr_io_close). Threads: the plain functions may be called from any thread;
// the awaitables (returning tr_poll) from a task of the runtime the tr_io
// belongs to, with the same arguments on every poll until TR_READY.
#ifndef TROUPE_NET_H
#define TROUPE_NET_H

#include <netdb.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <troupe/blocking.h>
#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/io.h>
#include <troupe/task.h>

TR_BEGIN_DECLS

// ---------------------------------------------------------------------------
// Addresses.

// A socket address of any family and its length: a plain value, copy it
// freely. len 0 means "no address".
typedef struct tr_addr {
    struct sockaddr_storage ss;
    socklen_t len;
} tr_addr;

// Room for any text tr_addr_format writes, with its NUL.
#define TR_ADDR_STRLEN 128

// tr_addr_parse parses text (see the header comment for the forms) into
// *out. TR_EINVAL for malformed text (a missing or out-of-range port, an
// IPv6 address without brackets), TR_ENAME for a host that is not a
// numeric address, TR_ETOOBIG for a Unix path longer than sun_path holds.
// Never blocks; any thread.
TR_API tr_err tr_addr_parse(const char *text, tr_addr *out);

// tr_addr_unix makes the Unix-domain address of path (not prefixed with
// "unix:"); a path that starts with '@' names the abstract namespace (the
// '@' is replaced by a NUL byte, as ss(8) shows it). TR_EINVAL for an empty
// path, TR_ETOOBIG for one that does not fit. Any thread.
TR_API tr_err tr_addr_unix(tr_addr *out, const char *path);

// tr_addr_from_sockaddr copies a system address (from accept, recvfrom,
// getsockname) into *out. TR_EINVAL when len is larger than a
// sockaddr_storage. Any thread.
TR_API tr_err tr_addr_from_sockaddr(tr_addr *out, const struct sockaddr *sa, socklen_t len);

// tr_addr_format writes a as text into buf (size bytes, TR_ADDR_STRLEN is
// always enough), in the forms tr_addr_parse reads back: "127.0.0.1:8080",
// "[::1]:80", "unix:/path", "unix:@name", and "unix:" for an unnamed Unix
// socket (a socketpair end). TR_ETOOBIG when it does not fit (buf then
// holds a truncated, NUL-terminated text), TR_EINVAL for an unknown family
// or an empty address. Any thread.
TR_API tr_err tr_addr_format(const tr_addr *a, char *buf, size_t size);

// tr_addr_port returns the port of an IPv4 or IPv6 address, 0 for others.
TR_API unsigned tr_addr_port(const tr_addr *a);

// tr_addr_family returns a's family (AF_INET, AF_INET6, AF_UNIX), or
// AF_UNSPEC for an empty address.
TR_API int tr_addr_family(const tr_addr *a);

// ---------------------------------------------------------------------------
// Stream listeners and connections (TCP and Unix).

// tr_net_listen makes a listening stream socket bound to addr (IPv4, IPv6
// or Unix) with backlog (<= 0: SOMAXCONN), registered with rt. TCP sockets
// get SO_REUSEADDR (a restarted server can bind while old connections sit
// in TIME_WAIT); an IPv6 wildcard keeps the system's IPV6_V6ONLY default.
// A Unix path must not exist yet (TR_EADDRINUSE): remove a stale socket
// file first; closing the listener does not remove it either. Port 0 picks
// a free port: read it back with tr_net_local_addr. The caller owns the
// returned reference. Any thread. Accept with tr_net_accept or tr_accept.
TR_API tr_err tr_net_listen(tr_rt *rt, const tr_addr *addr, int backlog, tr_io **out);

// tr_tcp_listen is tr_net_listen for IPv4 and IPv6 addresses only
// (TR_EINVAL for another family).
TR_API tr_err tr_tcp_listen(tr_rt *rt, const tr_addr *addr, int backlog, tr_io **out);

// tr_unix_listen is tr_net_listen for the Unix stream socket at path (as
// tr_addr_unix reads it).
TR_API tr_err tr_unix_listen(tr_rt *rt, const char *path, int backlog, tr_io **out);

// tr_net_accept accepts a connection on a listener: TR_READY with *err
// TR_OK, *conn a new tr_io (the caller owns the reference; non-blocking and
// close-on-exec from accept4) and the peer's address in *peer (may be NULL);
// or *err set and *conn NULL (TR_ECLOSED once the listener is closed,
// TR_EMFILE when the process is out of descriptors). A leaf operation from
// a task of lis's runtime. Cancel-safe: no connection is taken unless it
// returns TR_READY.
TR_API tr_poll tr_net_accept(tr_io *lis, tr_cx *cx, tr_io **conn, tr_addr *peer, tr_err *err);

// A connect in progress: embed it in the task state, zeroed. It owns the
// socket being connected until the connect completes. Back to its zeroed
// state when tr_net_connect (tr_tcp_connect, tr_unix_connect) returns
// TR_READY, so it may be reused at once.
typedef struct tr_net_connect_op {
    tr_connect_op nc_connect; // private: the connect on nc_io
    uint32_t nc_pad;          // private
    tr_io *nc_io;             // private: the socket being connected, NULL when idle
} tr_net_connect_op;

_Static_assert(sizeof(tr_net_connect_op) == sizeof(int) + sizeof(uint32_t) + sizeof(void *),
               "tr_net_connect_op: a tr_connect_op, padding and a pointer");

// tr_net_connect creates a stream socket for addr's family (IPv4, IPv6 or
// Unix) on the polling task's runtime and connects it without blocking:
// TR_READY with *err TR_OK and *out the connected tr_io (the caller owns
// the reference), or the failure with *out NULL and the socket closed:
// TR_ECONNREFUSED (nothing listens there), TR_ENOENT (no such Unix path),
// TR_ENETUNREACH, TR_ETIMEDOUT (the kernel gave up; bound the wait with
// tr_timeout_poll from troupe/time.h to give up sooner)... The op is idle
// again after TR_READY. Cancellation: a task cancelled (or timed out) while
// the connect is pending calls tr_net_connect_abandon(op) from its drop
// function, which closes the half-connected socket.
TR_API tr_poll tr_net_connect(tr_net_connect_op *op, tr_cx *cx, const tr_addr *addr, tr_io **out,
                              tr_err *err);

// tr_tcp_connect is tr_net_connect for IPv4 and IPv6 addresses only
// (TR_EINVAL at once for another family). The socket keeps Nagle's
// algorithm on: see tr_tcp_set_nodelay.
TR_API tr_poll tr_tcp_connect(tr_net_connect_op *op, tr_cx *cx, const tr_addr *addr, tr_io **out,
                              tr_err *err);

// tr_unix_connect is tr_net_connect to the Unix stream socket at path (as
// tr_addr_unix reads it). A Unix connect completes at its first poll or
// fails: when the listener's backlog is full it fails with TR_EAGAIN (as
// mio's does) rather than wait, since no readiness event would say when to
// try again. So op never holds a socket across polls, and a cancelled task
// has nothing to abandon (tr_net_connect_abandon is then a no-op).
TR_API tr_poll tr_unix_connect(tr_net_connect_op *op, tr_cx *cx, const char *path, tr_io **out,
                               tr_err *err);

// tr_net_connect_abandon closes the socket of a pending connect and makes
// op idle. A no-op on an idle op, so a drop function may call it
// unconditionally. Any thread, never blocks.
TR_API void tr_net_connect_abandon(tr_net_connect_op *op);

// tr_tcp_set_nodelay turns Nagle's algorithm off (on = true: small writes
// leave at once) or back on. Any thread. TR_ECLOSED on a closed io.
TR_API tr_err tr_tcp_set_nodelay(tr_io *io, bool on);

// tr_net_local_addr stores the address the socket is bound to in *out
// (getsockname). Any thread, but not concurrently with tr_io_close of io.
TR_API tr_err tr_net_local_addr(const tr_io *io, tr_addr *out);

// tr_net_peer_addr stores the address of the connected peer in *out
// (getpeername): TR_ENOTCONN when not connected. As tr_net_local_addr.
TR_API tr_err tr_net_peer_addr(const tr_io *io, tr_addr *out);

// ---------------------------------------------------------------------------
// Datagrams (UDP and Unix datagram sockets).

// tr_udp_bind makes a UDP socket bound to addr (IPv4 or IPv6; port 0 picks
// one), registered with rt. The caller owns the reference. Any thread.
TR_API tr_err tr_udp_bind(tr_rt *rt, const tr_addr *addr, tr_io **out);

// tr_udp_socket makes an unbound UDP socket of family AF_INET or AF_INET6
// (the kernel binds it to an ephemeral port at its first send). The caller
// owns the reference. Any thread.
TR_API tr_err tr_udp_socket(tr_rt *rt, int family, tr_io **out);

// tr_net_dgram_connect sets the default peer of a datagram socket (UDP or
// Unix), so that tr_send and tr_recv can be used and datagrams from other
// addresses are dropped by the kernel. Never blocks; any thread.
TR_API tr_err tr_net_dgram_connect(tr_io *io, const tr_addr *peer);

// tr_net_sendto sends one datagram of len bytes to *to: TR_READY with *err
// TR_OK and *n the bytes sent, or *err the error (TR_ETOOBIG for a datagram
// larger than the socket allows) and *n 0. A leaf operation from a task;
// cancel-safe (nothing is sent unless it returns TR_READY).
TR_API tr_poll tr_net_sendto(tr_io *io, tr_cx *cx, const void *buf, size_t len, const tr_addr *to,
                             size_t *n, tr_err *err);

// tr_net_recvfrom receives one datagram into buf (the part beyond len is
// lost): TR_READY with *err TR_OK, *n its length (up to len) and its
// sender in *from (may be NULL; from->len is 0 when the sender has no
// address, as an unbound Unix socket or the other end of a pair), or *err
// the error and *n 0. A leaf operation from a task; cancel-safe (no
// datagram is taken unless it returns TR_READY).
TR_API tr_poll tr_net_recvfrom(tr_io *io, tr_cx *cx, void *buf, size_t len, tr_addr *from,
                               size_t *n, tr_err *err);

// ---------------------------------------------------------------------------
// Unix-domain extras.

// tr_unix_dgram_bind makes a Unix datagram socket bound to path (as
// tr_addr_unix reads it; it must not exist yet), registered with rt. The
// caller owns the reference, and removes the socket file when done. Any
// thread.
TR_API tr_err tr_unix_dgram_bind(tr_rt *rt, const char *path, tr_io **out);

// tr_unix_pair makes a connected pair of Unix sockets (socketpair(2)) of
// type SOCK_STREAM, SOCK_DGRAM or SOCK_SEQPACKET, both registered with rt.
// The caller owns one reference to each of *a and *b. Any thread.
TR_API tr_err tr_unix_pair(tr_rt *rt, int type, tr_io **a, tr_io **b);

// The credentials of a Unix socket's peer, as the kernel recorded them when
// the connection (or the pair) was made.
typedef struct tr_peer_cred {
    pid_t pid;
    uid_t uid;
    gid_t gid;
} tr_peer_cred;

// tr_unix_peer_cred reads the peer's credentials (SO_PEERCRED) of a
// connected Unix socket. Any thread. TR_ECLOSED on a closed io.
TR_API tr_err tr_unix_peer_cred(const tr_io *io, tr_peer_cred *out);

// ---------------------------------------------------------------------------
// Pipes.

// tr_pipe makes a pipe (pipe2 with O_CLOEXEC | O_NONBLOCK) and registers
// both ends with rt: *rd reads what *wr writes. The caller owns one
// reference to each. Writing after the read end is closed fails with
// TR_EPIPE, but write(2) also raises SIGPIPE first: a program that may do
// this ignores SIGPIPE. Any thread.
TR_API tr_err tr_pipe(tr_rt *rt, tr_io **rd, tr_io **wr);

// ---------------------------------------------------------------------------
// Name resolution, on the blocking pool (getaddrinfo blocks).

// tr_resolve runs getaddrinfo(host, service, hints) on the pool of the
// polling task's runtime. host or service may be NULL (not both); both
// strings are copied on the first poll, and of hints (may be NULL) only
// ai_flags, ai_family, ai_socktype and ai_protocol are read. TR_READY with
// *err TR_OK and *res the list (free it with tr_resolve_free or
// freeaddrinfo), or an error and *res NULL: TR_ENAME (no such name or
// service, or no address of the family asked for), TR_EAGAIN (temporary
// failure of the name server), TR_EINVAL (bad hints), TR_ENOMEM, or an
// errno mapping for a system error. Pass the same op (and arguments) on
// every poll until TR_READY; op is then idle. A leaf operation. Cancellation:
// tr_blocking_abandon(&op) from drop; a lookup in progress runs to its end
// and its list is freed.
TR_API tr_poll tr_resolve(tr_blocking_op *op, tr_cx *cx, const char *host, const char *service,
                          const struct addrinfo *hints, struct addrinfo **res, tr_err *err);

// tr_resolve_free frees a list from tr_resolve (NULL is a no-op).
TR_API void tr_resolve_free(struct addrinfo *res);

TR_END_DECLS

#endif
