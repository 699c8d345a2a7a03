// troupe/node.h: this process as a node: actors reachable from other
// processes over nng, with the same send, call, monitor and link API as
// local ones (troupe/actor.h).
//
// A node listens on one URL (inproc://, ipc://, tls+tcp://; tcp:// only on
// loopback behind an explicit test flag) with a PULL socket, and reaches
// each peer through a PUSH socket dialed to the peer's own listener: one
// link per direction, never REQ/REP (which re-sends). A link starts with a
// Hello that carries the sender's node id, the URL to answer on and the
// token the receiving node asks for; a link without a valid Hello is
// closed. Messages travel as envelopes (troupe/envelope.h); each receiving
// socket refuses messages over recv_max bytes (nng closes the pipe of an
// oversized message without delivering it: that is counted, it cannot be
// answered). Heartbeats on idle links find a peer that died or stopped
// (SIGSTOP): past dead_after_ms of silence the peer is down, every local
// monitor of one of its actors gets a Down with TR_ENOTCONN, and every
// local actor linked to one of them an exit signal with it. A call to a
// remote actor fails at once when the callee stops without answering (its
// node answers the request with a CallFailed) or when its node goes down.
//
// Addresses: node 0 is this process. A node id is random per start (its
// incarnation), so an address from a peer's earlier run is unknown to its
// new one and gets TR_ENOTFOUND. The envelope's sender and reply-to, and
// the addresses inside Down, Exit and CallFailed, are translated at the
// border (this node's id <-> 0); addresses inside your own message bodies
// are yours to translate (tr_node_export, tr_node_import).
//
// nng lifecycle: the library never calls nng_fini (it is not reference
// counted and must run alone); a program calls it last, after
// tr_node_stop, if it wants valgrind to see every block freed.
#ifndef TROUPE_NODE_H
#define TROUPE_NODE_H

#include <troupe/actor.h>
#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/rt.h>

TR_BEGIN_DECLS

typedef struct tr_node tr_node;

// The receive limit's default (bytes of one envelope).
#define TR_NODE_RECV_MAX_DEFAULT ((size_t)4 << 20)

// The actor id of every node's executor (when serve_executor is set):
// send it ExecutorCommand messages (troupe/executor.h) from another node,
// with a reply-to. Spawn runs only kinds marked tr_kind_set_remote (others:
// an Error with TR_EPERM); Cancel and StatusRequest are served as locally.
// Shutdown is refused with TR_EPERM unless serve_shutdown is set; then the
// node answers Done and the runtime shuts down as tr_exec_send would have
// it: the link goes away with it, so Done may be the last thing the peer
// hears, or (the process exiting at once) lost.
#define TR_NODE_EXECUTOR ((uint64_t)1)

typedef struct tr_node_opts {
    const char *listen; // required: inproc://, ipc://PATH, tls+tcp://HOST:PORT (port 0: any)
    const char *token;  // peers must present it (required on tls+tcp and tcp); NULL: none
    const char *tls_cert_key_file; // tls+tcp listener: certificate and key, one PEM
    const char *tls_ca_file;       // tls+tcp dialer: the CA that signs the peers' certificates
    const char *tls_server_name;   // tls+tcp dialer: the name to check (NULL: "localhost")
    size_t recv_max;               // bytes; 0: TR_NODE_RECV_MAX_DEFAULT
    uint32_t heartbeat_ms;         // 0: 500
    uint32_t dead_after_ms;        // 0: 5000
    uint32_t sendbuf;              // envelopes waiting per link (past it TR_EAGAIN); 0: 1024
    bool allow_plain_tcp;          // tcp:// on a loopback address (tests only)
    bool serve_executor;           // answer ExecutorCommand sent to TR_NODE_EXECUTOR
    bool serve_shutdown;           // with serve_executor: carry out a peer's Shutdown
} tr_node_opts;

// tr_node_start makes this process a node of rt, listening at opts->listen.
// TR_OK and *out; TR_EBUSY when the process is a node already (one per
// process), TR_EINVAL (a bad URL, tcp:// without allow_plain_tcp or off
// loopback, tls+tcp without a token or a certificate), TR_EADDRINUSE, or
// the error nng reported (tr_error_detail-style text from
// tr_node_last_error). Any thread.
TR_API tr_err tr_node_start(tr_rt *rt, const tr_node_opts *opts, tr_node **out);

// tr_node_stop closes every link and the listener, fails what waits on a
// peer (Downs with TR_ENOTCONN), stops every aio and frees the node. From a
// plain thread while the runtime runs (it waits for nng's callbacks and
// for the node's tasks to end), never from one of its workers; and before
// tr_rt_free.
TR_API tr_err tr_node_stop(tr_node *n);

// tr_node_id returns this node's id (never 0).
TR_API uint64_t tr_node_id(const tr_node *n);

// tr_node_listen_url returns the URL peers dial, with the real port when
// the listener was given port 0.
TR_API const char *tr_node_listen_url(const tr_node *n);

// tr_node_connect links this node to the node listening at url and returns
// its id in *peer: TR_OK, TR_ETIMEDOUT (no HelloAck within timeout_ms),
// TR_EPERM (the peer refused the token), or nng's error. Blocks the
// calling thread; not from a worker (TR_EDEADLOCK). Connecting to a peer
// already linked returns its id at once.
TR_API tr_err tr_node_connect(tr_node *n, const char *url, uint32_t timeout_ms, uint64_t *peer);

// tr_node_whereis looks name up on the node peer: TR_OK and *addr (with
// node set to peer), TR_ENOTFOUND, TR_ETIMEDOUT, TR_ENOTCONN. Blocks; not
// from a worker.
TR_API tr_err tr_node_whereis(tr_node *n, uint64_t peer, const char *name, uint32_t timeout_ms,
                              tr_actor_addr *addr);

// tr_node_peer_up reports whether peer is linked and alive.
TR_API bool tr_node_peer_up(tr_node *n, uint64_t peer);

// tr_node_export turns a local address (node 0) into one a peer can use
// (node: this node's id); tr_node_import the reverse. Others unchanged.
TR_API tr_actor_addr tr_node_export(const tr_node *n, tr_actor_addr a);
TR_API tr_actor_addr tr_node_import(const tr_node *n, tr_actor_addr a);

// Counters of a node (snapshots).
typedef struct tr_node_stats {
    uint64_t sent, received; // envelopes (many travel in one nng message, a frame)
    uint64_t send_full;      // sends that found sendbuf envelopes waiting (see send_parked)
    uint64_t unknown_type, malformed, too_deep, over_budget; // envelopes refused
    uint64_t no_actor;                                       // envelopes for actors that are gone
    uint64_t errors_answered;                                // NodeError replies sent
    uint64_t pipes_closed; // pipes nng closed (oversized messages among them)
    uint64_t bad_hello;    // links refused (no Hello first, a wrong token)
    uint64_t peers_down;   // peers found dead
    uint32_t peers;        // linked now
    // Of send_full: Downs, Exits, replies and control messages queued
    // past the bound all the same (a user send is refused instead, a
    // heartbeat dropped). park_lost: envelopes accepted for a link that
    // closed, or whose peer's dead_after passed, before nng took them, and
    // forced ones dropped past 4096 over the bound.
    uint64_t send_parked, park_lost;
    uint64_t frames_sent; // nng messages that carried `sent` (sent / frames_sent: the batching)
} tr_node_stats;

TR_API void tr_node_stats_get(tr_node *n, tr_node_stats *out);

// tr_err_from_nng maps an nng error number (nng_strerror's) to the closest
// tr_err (TR_EIO when none is close), for programs that use nng beside
// troupe, as the daemon's client does. Any thread.
TR_API tr_err tr_err_from_nng(int rv);

TR_END_DECLS

#endif
