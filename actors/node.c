// Design notes.
//
// One node per process (troupe/node.h). Inbound: one PULL socket, one
// receive aio. Its callback runs on an nng thread and never blocks: it
// wraps the nng_msg in a message of the bridge's own class (whose free
// function frees the nng_msg too, so a wrapper dropped by a stopping
// mailbox leaks nothing), pushes it into the bridge actor's mailbox (a push
// to an empty mailbox wakes the bridge through tr_wake) and re-arms the
// receive itself, so no cross-thread wake is spent per message on
// re-arming. The bridge, an actor on a worker, does the rest: it checks the
// link's Hello, unpacks the envelope (troupe/envelope.h: depth scan,
// budget, global cap), translates addresses at the border and delivers.
//
// Outbound: each peer has one link (olink): its PUSH socket, one send aio
// and a queue of frames. A frame is one nng message holding one or more
// records, each [8 bytes: destination actor][4 bytes: length][envelope]
// (frame.h). A send appends its record to the link's last waiting frame.
// From a task or an actor on a worker, the frames then wait until that
// worker has run the tasks ready in front of it (tr_worker_defer): a run
// of polls that answers many requests sends the peer one frame, one write,
// one wake of its bridge. From anywhere else they go at once. Whoever
// flushes sends them on its own thread with nng_sendmsg (no callback, so
// no nng thread to wake), while other senders only append behind it; a
// full nng buffer, or more than SYNC_MAX frames, hands the rest to the
// link's aio, whose callback (on an nng thread) sends frame after frame
// until none waits. One queue per link keeps every sender's order. A
// frame stays within the peer's receive limit (its Hello says it) and
// FRAME_MAX; a bigger record travels alone.
//
// A full link (sendbuf records waiting) is TR_EAGAIN for a user send, a
// call or a request, which keeps its message. A Down, Exit, reply or
// control message (the forced lane) is queued past the bound, up to
// PARK_MAX more, and then dropped and counted; a heartbeat is dropped at
// the bound. The frame the aio holds waits at most the peer's dead_after
// for room: a slow peer loses nothing, a stuck one is declared dead anyway.

// Links: node A dials B's listener with a PUSH socket and sends Hello(A,
// A's URL, token, echo_url = the URL it dialed); B checks the token,
// records A's pipe as authenticated, dials A's URL and answers with its own
// Hello(B, ..., echo_url = the URL A dialed), which is how tr_node_connect
// on A learns which node answered. The first envelope on every pipe must be
// a valid Hello; anything else closes the pipe (bad_hello).
//
// Liveness: a heartbeat task sends a Heartbeat on each link every
// heartbeat_ms and declares a peer down after dead_after_ms without a
// message from it (or at once when its pipe closes): its link is closed and
// every local monitor of one of its actors gets a Down (TR_ENOTCONN). While
// no peer is linked the task sleeps without a timer.
//
// Monitors of remote actors: the watcher's node sends MonitorReq to the
// target's node, which sets an ordinary monitor whose watcher is a remote
// address, so the target's Down travels back as any message does; the
// watcher's node keeps a record per peer to answer the watchers itself when
// the peer goes down.
#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <nng/nng.h>
#include <nng/protocol/pipeline0/pull.h>
#include <nng/protocol/pipeline0/push.h>
#include <nng/supplemental/tls/tls.h>

#include <troupe/envelope.h>
#include <troupe/executor.h>
#include <troupe/node.h>
#include <troupe/time.h>
#include <troupe/v1/node.pb-c.h>

#include "actor_int.h"
#include "frame.h"

#define PROTO_VERSION 2 // 2: a link's nng messages are frames of records
#define ACTOR_CONTROL 0

// A local actor waiting on an actor of the peer: a monitor (or a call's
// watch), or a link (rm_link, rm_ref 0). The peer's death answers it.
typedef struct rmon {
    uint64_t rm_ref;
    tr_actor_addr rm_watcher; // local
    tr_actor_addr rm_target;  // on the peer
    bool rm_link;
} rmon;

typedef struct peer {
    struct peer *p_next;
    uint64_t p_id; // 0 until its Hello arrived
    char *p_url;   // where it listens (we dial it)
    struct olink *p_link;
    nng_dialer p_dialer;
    uint32_t p_in_pipe;           // its authenticated pipe on our PULL (0: none yet)
    _Atomic uint64_t p_last_seen; // ns, tr_now
    bool p_up;
    bool p_dead; // its pipe closed: the heartbeat task frees it
    rmon *p_mon;
    size_t p_nmon, p_capmon;
} peer;

typedef struct waitreq {
    struct waitreq *w_next;
    const char *w_url; // a connect: the URL dialed
    uint64_t w_corr;   // a whereis: its correlation id
    bool w_done;
    tr_err w_err;
    uint64_t w_peer;
    tr_actor_addr w_addr;
} waitreq;

struct tr_node {
    tr_rt *n_rt;
    uint64_t n_id;
    char *n_url;
    char *n_token;
    tr_node_opts n_opts;
    nng_socket n_pull;
    nng_listener n_listener;
    nng_aio *n_rx;
    nng_tls_config *n_tls_server;
    nng_tls_config *n_tls_client;
    tr_actor_addr n_bridge;
    tr_join n_hb; // the heartbeat task
    tr_waker n_hb_waker;
    pthread_mutex_t n_lock; // peers, waits, n_hb_waker, exec map
    pthread_cond_t n_cv;
    peer *n_peers;
    waitreq *n_waits;
    _Atomic bool n_stopping;
    bool n_bridge_gone; // under n_lock: the bridge's stopped ran
    // The executor's replies, forwarded to where each command asked.
    tr_mailbox *n_exec_mb;
    struct pumpbox *n_pumpbox;
    struct exec_route *n_routes;
    size_t n_nroutes, n_caproutes;
    // Counters.
    _Atomic uint64_t s_sent, s_frames, s_received, s_send_full, s_unknown, s_malformed, s_too_deep,
        s_over_budget, s_no_actor, s_errors, s_pipes_closed, s_bad_hello, s_peers_down, s_parked,
        s_park_lost;
};

// A frame waiting for the link (see the notes).
typedef struct frame {
    struct frame *f_next;
    nng_msg *f_msg;
    uint32_t f_n; // records in it
} frame;

// A peer's outbound link. Shared by the peer and the senders using it at
// the moment (l_refs); the last reference frees it.
typedef struct olink {
    pthread_mutex_t l_mu;
    nng_socket l_sock;
    nng_aio *l_aio; // the frame nng holds, while l_busy
    tr_node *l_node;
    frame *l_head, *l_tail; // waiting behind it
    uint32_t l_waiting;     // records in the waiting frames
    uint32_t l_inflight;    // records in the frame nng holds
    size_t l_frame_max;     // bytes of one frame
    bool l_busy;            // a thread is flushing, or the aio holds a frame
    bool l_closed;
    _Atomic uint32_t l_refs;
} olink;

// A frame's size: at most this, and at most the peer's receive limit; a
// record bigger than that travels in a frame of its own.
#define FRAME_MAX ((size_t)64 << 10)

// Past sendbuf records waiting, at most this many more forced-lane
// records wait on one link; past that one is dropped and counted.
enum { PARK_MAX = 4096 };

typedef struct exec_route {
    uint64_t er_corr;
    tr_actor_addr er_to;
    bool er_want_result; // a second reply (TaskResult) follows the first
} exec_route;

static _Atomic(tr_node *) g_node;
static pthread_mutex_t g_node_lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t g_wire_class;

#define COUNT(n, f) atomic_fetch_add_explicit(&(n)->f, 1, memory_order_relaxed)

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

tr_err
tr_err_from_nng(int rv)
{
    switch (rv) {
    case 0:
        return TR_OK;
    case NNG_EAGAIN:
        return TR_EAGAIN;
    case NNG_ETIMEDOUT:
        return TR_ETIMEDOUT;
    case NNG_ECLOSED:
        return TR_ECLOSED;
    case NNG_EADDRINUSE:
        return TR_EADDRINUSE;
    case NNG_EADDRINVAL:
    case NNG_EINVAL:
        return TR_EINVAL;
    case NNG_ENOMEM:
        return TR_ENOMEM;
    case NNG_ECONNREFUSED:
        return TR_ECONNREFUSED;
    case NNG_ENOENT:
        return TR_ENOENT;
    case NNG_EPERM:
    case NNG_EPEERAUTH:
        return TR_EPERM;
    case NNG_ENOTSUP:
        return TR_ENOTSUP;
    default:
        return TR_EIO;
    }
}

// ---------------------------------------------------------------------------
// Address translation at the border.

tr_actor_addr
tr_node_export(const tr_node *n, tr_actor_addr a)
{
    if (n != NULL && a.node == 0 && a.actor != 0) {
        a.node = n->n_id;
    }
    return a;
}

tr_actor_addr
tr_node_import(const tr_node *n, tr_actor_addr a)
{
    if (n != NULL && a.node == n->n_id) {
        a.node = 0;
    }
    return a;
}

static void
addr_fix(const tr_node *n, Troupe__V1__Address *a, bool out)
{
    if (a == NULL) {
        return;
    }
    tr_actor_addr x = {a->node, a->actor};
    x = out ? tr_node_export(n, x) : tr_node_import(n, x);
    a->node = x.node;
    a->actor = x.actor;
}

// fix_body translates the addresses inside the system messages.
static void
fix_body(const tr_node *n, tr_msg *m, bool out)
{
    if (tr_msg_is(m, &troupe__v1__down__descriptor)) {
        addr_fix(n, ((Troupe__V1__Down *)tr_msg_body(m))->actor, out);
    } else if (tr_msg_is(m, &troupe__v1__exit__descriptor)) {
        addr_fix(n, ((Troupe__V1__Exit *)tr_msg_body(m))->from, out);
    } else if (tr_msg_is(m, &troupe__v1__call_failed__descriptor)) {
        addr_fix(n, ((Troupe__V1__CallFailed *)tr_msg_body(m))->callee, out);
    } else if (tr_msg_is(m, &troupe__v1__monitor_req__descriptor)) {
        addr_fix(n, ((Troupe__V1__MonitorReq *)tr_msg_body(m))->watcher, out);
    } else if (tr_msg_is(m, &troupe__v1__whereis_reply__descriptor)) {
        addr_fix(n, ((Troupe__V1__WhereisReply *)tr_msg_body(m))->actor, out);
    } else if (tr_msg_is(m, &troupe__v1__link_req__descriptor) ||
               tr_msg_is(m, &troupe__v1__unlink_req__descriptor)) {
        addr_fix(n, ((Troupe__V1__LinkReq *)tr_msg_body(m))->from, out);
    }
}

// ---------------------------------------------------------------------------
// Peers (under n_lock).

static peer *
peer_by_id_locked(tr_node *n, uint64_t id)
{
    for (peer *p = n->n_peers; p != NULL; p = p->p_next) {
        if (p->p_id == id && p->p_up) {
            return p;
        }
    }
    return NULL;
}

static peer *
peer_by_url_locked(tr_node *n, const char *url)
{
    for (peer *p = n->n_peers; p != NULL; p = p->p_next) {
        if (strcmp(p->p_url, url) == 0) {
            return p;
        }
    }
    return NULL;
}

// ---------------------------------------------------------------------------
// Links.

static void link_cb(void *arg);

static void
link_unref(olink *l)
{
    if (atomic_fetch_sub_explicit(&l->l_refs, 1, memory_order_acq_rel) == 1) {
        pthread_mutex_destroy(&l->l_mu);
        free(l);
    }
}

static olink *
link_ref(olink *l)
{
    atomic_fetch_add_explicit(&l->l_refs, 1, memory_order_relaxed);
    return l;
}

// link_open dials url with a fresh PUSH socket: its link in *out (one
// reference, the peer's), its dialer in *d.
static tr_err
link_open(tr_node *n, const char *url, olink **out, nng_dialer *d)
{
    olink *l = tra_zalloc(sizeof *l);
    pthread_mutex_init(&l->l_mu, NULL);
    l->l_node = n;
    l->l_frame_max = FRAME_MAX; // until the peer's Hello tells its limit
    atomic_init(&l->l_refs, 1);
    int rv = nng_aio_alloc(&l->l_aio, link_cb, l);
    if (rv != 0) {
        link_unref(l);
        return tr_err_from_nng(rv);
    }
    // A frame nng cannot hand on for that long: the peer is declared dead
    // meanwhile anyway.
    nng_aio_set_timeout(l->l_aio, (nng_duration)n->n_opts.dead_after_ms);
    if ((rv = nng_push0_open(&l->l_sock)) != 0) {
        nng_aio_free(l->l_aio);
        link_unref(l);
        return tr_err_from_nng(rv);
    }
    // nng buffers frames; the bound a sender sees is ours (sendbuf records).
    uint32_t frames = n->n_opts.sendbuf < 16 ? n->n_opts.sendbuf : 16;
    nng_socket_set_int(l->l_sock, NNG_OPT_SENDBUF, (int)frames);
    // Reconnect quickly after a peer restarts, but not in a tight loop.
    nng_socket_set_ms(l->l_sock, NNG_OPT_RECONNMINT, 10);
    nng_socket_set_ms(l->l_sock, NNG_OPT_RECONNMAXT, 1000);
    rv = nng_dialer_create(d, l->l_sock, url);
    if (rv == 0 && n->n_tls_client != NULL && strncmp(url, "tls+tcp://", 10) == 0) {
        rv = nng_dialer_set_ptr(*d, NNG_OPT_TLS_CONFIG, n->n_tls_client);
    }
    if (rv == 0) {
        // Non-blocking: nng keeps dialing in the background, and the Hello
        // waits in the send buffer until the link is up.
        rv = nng_dialer_start(*d, NNG_FLAG_NONBLOCK);
    }
    if (rv != 0) {
        nng_close(l->l_sock);
        nng_aio_free(l->l_aio);
        link_unref(l);
        return tr_err_from_nng(rv);
    }
    *out = l;
    return TR_OK;
}

// link_set_peer_max caps l's frames at the peer's receive limit (its
// Hello's recv_max; 0: not said).
static void
link_set_peer_max(olink *l, uint64_t recv_max)
{
    pthread_mutex_lock(&l->l_mu);
    l->l_frame_max = recv_max != 0 && recv_max < FRAME_MAX ? (size_t)recv_max : FRAME_MAX;
    pthread_mutex_unlock(&l->l_mu);
}

// link_close closes l's socket (its dialer is closed already), drops what
// waits and stops the aio, then lets go of the peer's reference.
static void
link_close(olink *l)
{
    tr_node *n = l->l_node;
    pthread_mutex_lock(&l->l_mu);
    l->l_closed = true;
    frame *f = l->l_head;
    l->l_head = l->l_tail = NULL;
    atomic_fetch_add_explicit(&n->s_park_lost, l->l_waiting, memory_order_relaxed);
    l->l_waiting = 0;
    pthread_mutex_unlock(&l->l_mu);
    while (f != NULL) {
        frame *next = f->f_next;
        nng_msg_free(f->f_msg);
        free(f);
        f = next;
    }
    // The frame nng holds completes (closed) and the callback, seeing
    // l_closed, starts nothing more.
    nng_close(l->l_sock);
    nng_aio_stop(l->l_aio);
    nng_msg *left = nng_aio_get_msg(l->l_aio);
    if (left != NULL) {
        nng_msg_free(left);
    }
    nng_aio_free(l->l_aio);
    l->l_aio = NULL;
    link_unref(l);
}

// frame_counted counts a frame of nrec envelopes that nng took (ok) or
// that was lost.
static void
frame_counted(tr_node *n, uint32_t nrec, bool ok)
{
    if (ok) {
        atomic_fetch_add_explicit(&n->s_sent, nrec, memory_order_relaxed);
        COUNT(n, s_frames);
    } else {
        atomic_fetch_add_explicit(&n->s_park_lost, nrec, memory_order_relaxed);
    }
}

// pop_locked takes the first waiting frame off l (one waits). Under l_mu.
static frame *
pop_locked(olink *l)
{
    frame *f = l->l_head;
    l->l_head = f->f_next;
    if (l->l_head == NULL) {
        l->l_tail = NULL;
    }
    l->l_waiting -= f->f_n;
    return f;
}

// aio_send_locked hands f to nng through the link's aio (l_busy is set):
// nng keeps it until its buffer has room, and link_cb goes on from there.
// Under l_mu, which nng never needs: it completes the send on another
// thread, never inside nng_send_aio, and link_close cannot stop the aio
// in between.
static void
aio_send_locked(olink *l, frame *f)
{
    l->l_inflight = f->f_n;
    nng_aio_set_msg(l->l_aio, f->f_msg);
    free(f);
    nng_send_aio(l->l_sock, l->l_aio);
}

// link_cb runs on an nng thread when nng has taken the frame the aio held
// (or given up on it): the next waiting frame goes, or the link is idle.
static void
link_cb(void *arg)
{
    olink *l = arg;
    tr_node *n = l->l_node;
    int rv = nng_aio_result(l->l_aio);
    pthread_mutex_lock(&l->l_mu);
    if (rv != 0) {
        nng_msg *left = nng_aio_get_msg(l->l_aio);
        if (left != NULL) {
            nng_msg_free(left);
        }
        nng_aio_set_msg(l->l_aio, NULL);
    }
    frame_counted(n, l->l_inflight, rv == 0);
    l->l_inflight = 0;
    if (l->l_head != NULL && !l->l_closed) {
        aio_send_locked(l, pop_locked(l));
    } else {
        l->l_busy = false;
    }
    pthread_mutex_unlock(&l->l_mu);
}

// At most this many frames go out on the flushing thread at once; the
// rest go on nng's (link_cb).
enum { SYNC_MAX = 4 };

// flush_locked sends what waits on l unless someone is at it already
// (l_busy: that one sends it). Called with l_mu held; returns with it
// released. The frames go on this thread, straight into nng's buffer and
// mostly the socket (nng_sendmsg, no callback to wake a thread for), while
// every other sender only appends; a full buffer hands the frame to the
// aio, which waits for room.
static void
flush_locked(olink *l)
{
    tr_node *n = l->l_node;
    if (l->l_busy || l->l_closed || l->l_head == NULL) {
        pthread_mutex_unlock(&l->l_mu);
        return;
    }
    l->l_busy = true;
    for (int round = 0;; round++) {
        frame *f = pop_locked(l);
        if (round == SYNC_MAX) {
            aio_send_locked(l, f);
            pthread_mutex_unlock(&l->l_mu);
            return;
        }
        pthread_mutex_unlock(&l->l_mu);
        int rv = nng_sendmsg(l->l_sock, f->f_msg, NNG_FLAG_NONBLOCK);
        pthread_mutex_lock(&l->l_mu);
        if (rv == NNG_EAGAIN && !l->l_closed) {
            aio_send_locked(l, f);
            pthread_mutex_unlock(&l->l_mu);
            return;
        }
        if (rv != 0) {
            nng_msg_free(f->f_msg);
        }
        frame_counted(n, f->f_n, rv == 0);
        free(f);
        if (l->l_head == NULL || l->l_closed) {
            l->l_busy = false;
            pthread_mutex_unlock(&l->l_mu);
            return;
        }
    }
}

// What a task or an actor sends to a peer waits until its worker has run
// the tasks ready in front of it (tr_worker_defer), so that a run of
// polls' envelopes to one peer leaves in one frame. Per thread: the links
// with envelopes waiting for that.
enum { DEFER_MAX = 8 };
static __thread unsigned t_ndefer;
static __thread olink *t_defer[DEFER_MAX];

static void
flush_deferred(void *arg)
{
    (void)arg;
    for (unsigned i = 0; i < t_ndefer; i++) {
        pthread_mutex_lock(&t_defer[i]->l_mu);
        flush_locked(t_defer[i]);
        link_unref(t_defer[i]);
    }
    t_ndefer = 0;
}

// defer_locked: true when l is flushed once this worker has run what is ready
// (it is, or now is, on the list); false: flush now. Under l_mu.
static bool
defer_locked(olink *l)
{
    for (unsigned i = 0; i < t_ndefer; i++) {
        if (t_defer[i] == l) {
            return true;
        }
    }
    if (t_ndefer == DEFER_MAX || !tr_worker_defer(flush_deferred, NULL)) {
        return false;
    }
    t_defer[t_ndefer++] = link_ref(l);
    return true;
}

// What a send does when the link is full.
enum { FULL_REFUSE, FULL_PARK, FULL_DROP };

// send_env packs m (an actor message, taken in every case but TR_EAGAIN)
// for actor `actor` of the peer behind l (see the notes): TR_OK, TR_EAGAIN
// (FULL_REFUSE on a full link: m kept, back in local form) or TR_ECLOSED.
static tr_err
send_env(tr_node *n, olink *l, uint64_t actor, tr_msg *m, int on_full)
{
    tra_msg *am = tra_msg_of(m);
    am->am_from = tr_node_export(n, am->am_from);
    am->am_reply = tr_node_export(n, am->am_reply);
    fix_body(n, m, true);
    size_t len = tr_msg_packed_size(m);
    if (len > UINT32_MAX - TRA_REC_HDR) {
        tra_panic("an envelope of %zu bytes", len);
    }
    size_t rec = TRA_REC_HDR + len;
    pthread_mutex_lock(&l->l_mu);
    if (l->l_closed) {
        pthread_mutex_unlock(&l->l_mu);
        tr_msg_free(m);
        return TR_ECLOSED;
    }
    uint32_t bound = n->n_opts.sendbuf;
    if (l->l_waiting >= bound) {
        COUNT(n, s_send_full);
        if (on_full == FULL_REFUSE) {
            pthread_mutex_unlock(&l->l_mu);
            // Back to local form: the caller keeps m.
            am->am_from = tr_node_import(n, am->am_from);
            am->am_reply = tr_node_import(n, am->am_reply);
            fix_body(n, m, false);
            return TR_EAGAIN;
        }
        if (on_full == FULL_DROP || l->l_waiting >= bound + PARK_MAX) {
            pthread_mutex_unlock(&l->l_mu);
            if (on_full == FULL_PARK) {
                COUNT(n, s_park_lost);
            }
            tr_msg_free(m);
            return TR_OK;
        }
        COUNT(n, s_parked);
    }
    frame *f = l->l_tail;
    if (f == NULL || (nng_msg_len(f->f_msg) + rec > l->l_frame_max)) {
        f = tra_zalloc(sizeof *f);
        if (nng_msg_alloc(&f->f_msg, 0) != 0 || nng_msg_reserve(f->f_msg, rec) != 0) {
            tra_panic("out of memory (an nng message of %zu bytes)", rec);
        }
        if (l->l_tail != NULL) {
            l->l_tail->f_next = f;
        } else {
            l->l_head = f;
        }
        l->l_tail = f;
    }
    size_t at = nng_msg_len(f->f_msg);
    size_t cap = nng_msg_capacity(f->f_msg);
    if (cap < at + rec && nng_msg_reserve(f->f_msg, 2 * cap > at + rec ? 2 * cap : at + rec) != 0) {
        tra_panic("out of memory (an nng message of %zu bytes)", 2 * cap);
    }
    if (nng_msg_realloc(f->f_msg, at + rec) != 0) {
        tra_panic("out of memory (an nng message of %zu bytes)", at + rec);
    }
    uint8_t *p = (uint8_t *)nng_msg_body(f->f_msg) + at;
    tra_rec_header(p, actor, len);
    tr_msg_pack_to(m, p + TRA_REC_HDR);
    f->f_n++;
    l->l_waiting++;
    if (defer_locked(l)) {
        pthread_mutex_unlock(&l->l_mu);
    } else {
        flush_locked(l);
    }
    tr_msg_free(m);
    return TR_OK;
}

static void rlink_drop(tr_node *n, tr_actor_addr me, tr_actor_addr other);

tr_err
tra_node_deliver(tr_actor_addr to, tr_msg *m, int lane)
{
    tr_node *n = atomic_load_explicit(&g_node, memory_order_acquire);
    if (n == NULL) {
        return TR_ENOTFOUND;
    }
    if (to.node == n->n_id) {
        to.node = 0;
        return tra_deliver(to, m, lane);
    }
    pthread_mutex_lock(&n->n_lock);
    peer *p = peer_by_id_locked(n, to.node);
    olink *l = p != NULL ? link_ref(p->p_link) : NULL;
    pthread_mutex_unlock(&n->n_lock);
    if (l == NULL) {
        return TR_ENOTFOUND;
    }
    if (tra_msg_of(m)->am_kind == TRA_K_EXIT) {
        rlink_drop(n, tra_msg_of(m)->am_from, to); // the link ends with this exit
    }
    // (A peer that goes down meanwhile: its link is closed after it left
    // the list, and the send then fails with TR_ECLOSED, m freed.)
    tr_err err = send_env(n, l, to.actor, m, lane == TRA_LANE_TRY ? FULL_REFUSE : FULL_PARK);
    link_unref(l);
    return err == TR_ECLOSED ? TR_OK : err;
}

// control builds a node control message of type d for the peer.
static tr_msg *
control(const ProtobufCMessageDescriptor *d, size_t extra, void **body)
{
    tr_msg *m = tr_msg_new(d, extra, body);
    tra_msg_of(m)->am_kind = TRA_K_NODE;
    return m;
}

// send_control sends m to the node behind l and lets go of l (a
// reference of the caller's).
static tr_err
send_control(tr_node *n, olink *l, tr_msg *m)
{
    tr_err err = send_env(n, l, ACTOR_CONTROL, m, FULL_PARK);
    link_unref(l);
    return err;
}

static tr_msg *
hello_msg(tr_node *n, const char *echo_url)
{
    Troupe__V1__Hello *h;
    tr_msg *m = control(&troupe__v1__hello__descriptor, 256, (void **)&h);
    h->node = n->n_id;
    h->listen_url = tr_msg_strdup(m, n->n_url);
    h->token = tr_msg_strdup(m, n->n_token != NULL ? n->n_token : "");
    h->version = PROTO_VERSION;
    h->echo_url = tr_msg_strdup(m, echo_url != NULL ? echo_url : "");
    h->recv_max = n->n_opts.recv_max;
    return m;
}

// rmon_add records r with the peer of r.rm_target and sends m (may be
// NULL) to that peer: TR_OK, or TR_ENOTFOUND (m freed) for an unknown peer.
static tr_err
rmon_add(tr_node *n, rmon r, tr_msg *m)
{
    pthread_mutex_lock(&n->n_lock);
    peer *p = peer_by_id_locked(n, r.rm_target.node);
    if (p == NULL) {
        pthread_mutex_unlock(&n->n_lock);
        if (m != NULL) {
            tr_msg_free(m);
        }
        return TR_ENOTFOUND;
    }
    if (p->p_nmon == p->p_capmon) {
        size_t cap = p->p_capmon == 0 ? 8 : p->p_capmon * 2;
        rmon *arr = realloc(p->p_mon, cap * sizeof(rmon));
        if (arr == NULL) {
            tra_panic("out of memory");
        }
        p->p_mon = arr;
        p->p_capmon = cap;
    }
    p->p_mon[p->p_nmon++] = r;
    olink *l = m != NULL ? link_ref(p->p_link) : NULL;
    pthread_mutex_unlock(&n->n_lock);
    if (m != NULL) {
        send_control(n, l, m);
    }
    return TR_OK;
}

tr_err
tra_node_watch(tr_actor_addr watcher, tr_actor_addr target, uint64_t ref, bool wire)
{
    tr_node *n = atomic_load_explicit(&g_node, memory_order_acquire);
    if (n == NULL) {
        return TR_ENOTFOUND;
    }
    tr_msg *m = NULL;
    if (wire) {
        Troupe__V1__MonitorReq *r;
        m = control(&troupe__v1__monitor_req__descriptor, 64, (void **)&r);
        r->ref = ref;
        r->watcher = tra_new_address(m, watcher);
        r->target = tra_new_address(m, (tr_actor_addr){0, target.actor});
    }
    return rmon_add(n, (rmon){ref, watcher, target, false}, m);
}

// rmon_drop forgets the remote monitor ref (its Down came, or it was
// removed); true when it was there.
static bool
rmon_drop(tr_node *n, uint64_t peer_id, uint64_t ref)
{
    bool found = false;
    pthread_mutex_lock(&n->n_lock);
    peer *p = peer_by_id_locked(n, peer_id);
    if (p != NULL) {
        for (size_t i = 0; i < p->p_nmon; i++) {
            if (p->p_mon[i].rm_ref == ref) {
                p->p_mon[i] = p->p_mon[--p->p_nmon];
                found = true;
                break;
            }
        }
    }
    pthread_mutex_unlock(&n->n_lock);
    return found;
}

void
tra_node_unwatch(tr_actor_addr target, uint64_t ref, bool wire)
{
    tr_node *n = atomic_load_explicit(&g_node, memory_order_acquire);
    if (n == NULL || !rmon_drop(n, target.node, ref) || !wire) {
        return;
    }
    Troupe__V1__DemonitorReq *r;
    tr_msg *m = control(&troupe__v1__demonitor_req__descriptor, 32, (void **)&r);
    r->ref = ref;
    r->target = tra_new_address(m, (tr_actor_addr){0, target.actor});
    tra_node_deliver((tr_actor_addr){target.node, ACTOR_CONTROL}, m, TRA_LANE_FORCE);
}

// rlink_drop forgets the link of local actor me with remote other.
static void
rlink_drop(tr_node *n, tr_actor_addr me, tr_actor_addr other)
{
    pthread_mutex_lock(&n->n_lock);
    peer *p = peer_by_id_locked(n, other.node);
    if (p != NULL) {
        for (size_t i = 0; i < p->p_nmon; i++) {
            rmon *r = &p->p_mon[i];
            if (r->rm_link && tr_actor_addr_eq(r->rm_watcher, me) &&
                r->rm_target.actor == other.actor) {
                *r = p->p_mon[--p->p_nmon];
                break;
            }
        }
    }
    pthread_mutex_unlock(&n->n_lock);
}

static tr_msg *
link_msg(const ProtobufCMessageDescriptor *d, tr_actor_addr me, tr_actor_addr other)
{
    // LinkReq and UnlinkReq have the same shape.
    Troupe__V1__LinkReq *r;
    tr_msg *m = control(d, 64, (void **)&r);
    r->from = tra_new_address(m, me);
    r->target = tra_new_address(m, (tr_actor_addr){0, other.actor});
    return m;
}

tr_err
tra_node_link(tr_actor_addr me, tr_actor_addr other)
{
    tr_node *n = atomic_load_explicit(&g_node, memory_order_acquire);
    if (n == NULL) {
        return TR_ENOTFOUND;
    }
    return rmon_add(n, (rmon){0, me, other, true},
                    link_msg(&troupe__v1__link_req__descriptor, me, other));
}

void
tra_node_unlink(tr_actor_addr me, tr_actor_addr other)
{
    tr_node *n = atomic_load_explicit(&g_node, memory_order_acquire);
    if (n == NULL) {
        return;
    }
    rlink_drop(n, me, other);
    tr_msg *m = link_msg(&troupe__v1__unlink_req__descriptor, me, other);
    if (tra_node_deliver((tr_actor_addr){other.node, ACTOR_CONTROL}, m, TRA_LANE_FORCE) != TR_OK) {
        tr_msg_free(m);
    }
}

// ---------------------------------------------------------------------------
// Peers going down.

// peer_free closes p's link and gives its monitors their Downs.
static void
peer_free(tr_node *n, peer *p, bool down)
{
    // The dialer first, so that it is not creating a pipe while the socket
    // closes (a rare hang of nng 1.5.2's close: nng #1498).
    if (p->p_dialer.id != 0) {
        nng_dialer_close(p->p_dialer);
    }
    link_close(p->p_link);
    for (size_t i = 0; i < p->p_nmon; i++) {
        tr_actor_addr from = {p->p_id, p->p_mon[i].rm_target.actor};
        tr_msg *d = p->p_mon[i].rm_link
                        ? tra_new_exit(from, TR_ENOTCONN, "node down")
                        : tra_new_down(from, p->p_mon[i].rm_ref, TR_ENOTCONN, "node down");
        if (tra_deliver(p->p_mon[i].rm_watcher, d, TRA_LANE_FORCE) != TR_OK) {
            tr_msg_free(d);
        }
    }
    if (down) {
        COUNT(n, s_peers_down);
    }
    free(p->p_mon);
    free(p->p_url);
    free(p);
}

// ---------------------------------------------------------------------------
// The bridge: inbound envelopes.

typedef struct wire {
    tra_msg w_m; // am_body: the nng_msg
} wire;

static void
wire_free(tr_msg *m)
{
    tra_msg *am = tra_msg_of(m);
    if (am->am_body != NULL) {
        nng_msg_free(am->am_body);
    }
    m->m_class = am->am_class;
    tr_msg_free(m);
}

static void
answer_error(tr_node *n, tr_actor_addr to, uint64_t corr, tr_err code, const char *type,
             const char *text)
{
    if (to.node == 0 || to.actor == 0) {
        return; // nobody to answer (a local reply-to would be a forgery)
    }
    Troupe__V1__NodeError *e;
    tr_msg *m = tr_msg_new(&troupe__v1__node_error__descriptor, 256, (void **)&e);
    e->code = (int32_t)code;
    e->text = tr_msg_strdup(m, text);
    e->type = tr_msg_strdup(m, type);
    tra_msg *am = tra_msg_of(m);
    am->am_kind = TRA_K_REPLY;
    am->am_corr = corr;
    if (tra_node_deliver(to, m, TRA_LANE_FORCE) != TR_OK) {
        tr_msg_free(m);
    } else {
        COUNT(n, s_errors);
    }
}

static void
wait_wake_locked(tr_node *n)
{
    pthread_cond_broadcast(&n->n_cv);
}

// on_hello records the peer behind pipe (a valid Hello), dialing it back
// when this node has no link to it yet.
static void
on_hello(tr_node *n, uint32_t pipe, const Troupe__V1__Hello *h)
{
    const char *url = h->listen_url;
    bool answer = false;
    rmon *old_mon = NULL;
    size_t old_nmon = 0;
    uint64_t old_id = 0;
    pthread_mutex_lock(&n->n_lock);
    peer *p = peer_by_url_locked(n, url);
    if (p == NULL) {
        p = tra_zalloc(sizeof *p);
        p->p_url = tra_strdup(url);
        if (link_open(n, url, &p->p_link, &p->p_dialer) != TR_OK) {
            pthread_mutex_unlock(&n->n_lock);
            free(p->p_url);
            free(p);
            return;
        }
        p->p_next = n->n_peers;
        n->n_peers = p;
        answer = true;
    } else if (p->p_id != 0 && p->p_id != h->node) {
        // The same URL, another incarnation: the old one is gone. Its
        // monitors get their Downs below; the link is the new one's.
        old_mon = p->p_mon;
        old_nmon = p->p_nmon;
        old_id = p->p_id;
        p->p_mon = NULL;
        p->p_nmon = p->p_capmon = 0;
        answer = true;
    } else if (!p->p_up && p->p_id == 0 && h->echo_url[0] == '\0') {
        answer = true; // we dialed it first, and it dialed us without seeing our Hello
    }
    p->p_id = h->node;
    p->p_in_pipe = pipe;
    p->p_up = true;
    atomic_store_explicit(&p->p_last_seen, now_ns(), memory_order_relaxed);
    // Wake the connects waiting for this URL, and the heartbeat task.
    for (waitreq *w = n->n_waits; w != NULL; w = w->w_next) {
        if (w->w_url != NULL && !w->w_done &&
            (strcmp(w->w_url, h->echo_url) == 0 || strcmp(w->w_url, url) == 0)) {
            w->w_done = true;
            w->w_err = TR_OK;
            w->w_peer = h->node;
        }
    }
    wait_wake_locked(n);
    tr_waker hb = n->n_hb_waker;
    n->n_hb_waker = (tr_waker){NULL, NULL};
    olink *l = link_ref(p->p_link);
    pthread_mutex_unlock(&n->n_lock);
    link_set_peer_max(l, h->recv_max);
    tr_wake(hb);
    for (size_t i = 0; i < old_nmon; i++) {
        tr_msg *d = tra_new_down((tr_actor_addr){old_id, old_mon[i].rm_target.actor},
                                 old_mon[i].rm_ref, TR_ENOTCONN, "node restarted");
        if (tra_deliver(old_mon[i].rm_watcher, d, TRA_LANE_FORCE) != TR_OK) {
            tr_msg_free(d);
        }
    }
    free(old_mon);
    if (answer) {
        send_control(n, l, hello_msg(n, h->echo_url)); // lets go of l
    } else {
        link_unref(l);
    }
}

static peer *
peer_by_pipe_locked(tr_node *n, uint32_t pipe)
{
    for (peer *p = n->n_peers; p != NULL; p = p->p_next) {
        if (p->p_in_pipe == pipe && p->p_up) {
            return p;
        }
    }
    return NULL;
}

static void serve_exec(tr_node *n, tr_msg *m);

static void
on_control(tr_node *n, peer *from, tr_msg *m)
{
    if (tr_msg_is(m, &troupe__v1__heartbeat__descriptor) ||
        tr_msg_is(m, &troupe__v1__hello__descriptor)) {
        return;
    }
    if (tr_msg_is(m, &troupe__v1__monitor_req__descriptor)) {
        const Troupe__V1__MonitorReq *r = tr_msg_body(m);
        if (r->watcher == NULL || r->target == NULL) {
            return;
        }
        tr_actor_addr w = {r->watcher->node, r->watcher->actor};
        tra_monitor_ref(w, (tr_actor_addr){0, r->target->actor}, r->ref);
        return;
    }
    if (tr_msg_is(m, &troupe__v1__demonitor_req__descriptor)) {
        const Troupe__V1__DemonitorReq *r = tr_msg_body(m);
        if (r->target != NULL) {
            tr_actor_demonitor((tr_actor_addr){0, r->target->actor}, r->ref);
        }
        return;
    }
    if (tr_msg_is(m, &troupe__v1__link_req__descriptor) ||
        tr_msg_is(m, &troupe__v1__unlink_req__descriptor)) {
        const Troupe__V1__LinkReq *r = tr_msg_body(m);
        if (r->from == NULL || r->target == NULL || r->from->node == 0) {
            return;
        }
        tr_actor_addr remote = {r->from->node, r->from->actor};
        tr_actor_addr local = {0, r->target->actor};
        if (tr_msg_is(m, &troupe__v1__link_req__descriptor)) {
            if (tra_remote_link(local, remote, true) == TR_OK) {
                // Its node's death is an exit signal for the local one too.
                rmon_add(n, (rmon){0, local, remote, true}, NULL);
            }
        } else {
            tra_remote_link(local, remote, false);
            rlink_drop(n, local, remote);
        }
        return;
    }
    if (tr_msg_is(m, &troupe__v1__whereis_req__descriptor)) {
        const Troupe__V1__WhereisReq *r = tr_msg_body(m);
        Troupe__V1__WhereisReply *rep;
        tr_msg *a = control(&troupe__v1__whereis_reply__descriptor, 32, (void **)&rep);
        tr_actor_addr found = TR_ACTOR_NONE;
        tr_err err = tr_actor_whereis(n->n_rt, r->name, &found);
        rep->code = (int32_t)err;
        rep->actor = tra_new_address(a, found);
        tra_msg_of(a)->am_corr = tr_msg_correlation(m);
        if (tra_node_deliver((tr_actor_addr){from->p_id, ACTOR_CONTROL}, a, TRA_LANE_FORCE) !=
            TR_OK) {
            tr_msg_free(a);
        }
        return;
    }
    if (tr_msg_is(m, &troupe__v1__whereis_reply__descriptor)) {
        const Troupe__V1__WhereisReply *r = tr_msg_body(m);
        pthread_mutex_lock(&n->n_lock);
        for (waitreq *w = n->n_waits; w != NULL; w = w->w_next) {
            if (w->w_url == NULL && w->w_corr == tr_msg_correlation(m) && !w->w_done) {
                w->w_done = true;
                w->w_err = (tr_err)r->code;
                if (r->actor != NULL) {
                    w->w_addr = (tr_actor_addr){r->actor->node, r->actor->actor};
                    if (w->w_addr.node == 0 && w->w_addr.actor != 0) {
                        w->w_addr.node = from->p_id;
                    }
                }
            }
        }
        wait_wake_locked(n);
        pthread_mutex_unlock(&n->n_lock);
    }
}

// The peer a frame came from, looked up (and its silence ended) once per
// frame: NULL until its pipe has a valid Hello.
typedef struct sender {
    peer *s_peer;
    uint64_t s_id;
} sender;

// sender_find fills *s for pipe unless it is known already.
static void
sender_find(tr_node *n, uint32_t pipe, sender *s)
{
    if (s->s_peer != NULL) {
        return;
    }
    pthread_mutex_lock(&n->n_lock);
    s->s_peer = peer_by_pipe_locked(n, pipe);
    if (s->s_peer != NULL) {
        s->s_id = s->s_peer->p_id;
        atomic_store_explicit(&s->s_peer->p_last_seen, now_ns(), memory_order_relaxed);
    }
    pthread_mutex_unlock(&n->n_lock);
}

// on_envelope handles one record of a frame that came through pipe from
// *s: the envelope p[0, len) for actor. false: the pipe is refused (no
// valid Hello first), the rest of the frame with it.
static bool
on_envelope(tr_node *n, nng_msg *nm, uint32_t pipe, sender *s, uint64_t actor, const uint8_t *p,
            size_t len)
{
    COUNT(n, s_received);
    tr_msg *m = NULL;
    tr_unpack_info info;
    tr_err err = tr_msg_unpack(p, len, NULL, &m, &info);
    sender_find(n, pipe, s);
    peer *from = s->s_peer;
    uint64_t from_id = s->s_id;
    if (from == NULL) {
        // The first envelope of a pipe must be a valid Hello.
        bool ok =
            err == TR_OK && actor == ACTOR_CONTROL && tr_msg_is(m, &troupe__v1__hello__descriptor);
        const Troupe__V1__Hello *h = ok ? tr_msg_body(m) : NULL;
        if (ok) {
            const char *want = n->n_token != NULL ? n->n_token : "";
            ok = h->version == PROTO_VERSION && strcmp(h->token, want) == 0 && h->node != 0 &&
                 h->node != n->n_id && h->listen_url[0] != '\0';
        }
        if (!ok) {
            COUNT(n, s_bad_hello);
            nng_pipe_close(nng_msg_get_pipe(nm));
        } else {
            on_hello(n, pipe, h);
        }
        if (m != NULL) {
            tr_msg_free(m);
        }
        return ok;
    }
    if (err != TR_OK) {
        switch (info.reason) {
        case TR_UNPACK_UNKNOWN:
            COUNT(n, s_unknown);
            break;
        case TR_UNPACK_TOO_DEEP:
            COUNT(n, s_too_deep);
            break;
        case TR_UNPACK_OVER_BUDGET:
        case TR_UNPACK_OVER_CAP:
            COUNT(n, s_over_budget);
            break;
        default:
            COUNT(n, s_malformed);
            break;
        }
        if (info.kind == TRA_K_USER && info.correlation != 0) {
            tr_actor_addr rt = {info.reply_to.node, info.reply_to.actor};
            answer_error(n, rt, info.correlation, err, info.type,
                         info.reason == TR_UNPACK_UNKNOWN ? "unknown message type"
                                                          : "message refused");
        }
        return true;
    }
    tra_msg *am = tra_msg_of(m);
    // Addresses of this node come home as local ones; a sender of node 0
    // would be a forgery of a local actor: it becomes the peer's.
    am->am_from = tr_node_import(n, am->am_from);
    am->am_reply = tr_node_import(n, am->am_reply);
    if (am->am_from.node == 0) {
        am->am_from = TR_ACTOR_NONE;
    }
    if (am->am_reply.node == 0) {
        am->am_reply = TR_ACTOR_NONE;
    }
    fix_body(n, m, false);
    if (am->am_kind == TRA_K_NODE || am->am_kind == TRA_K_WIRE) {
        if (actor == ACTOR_CONTROL && am->am_kind == TRA_K_NODE) {
            on_control(n, from, m);
        }
        tr_msg_free(m);
        return true;
    }
    if (am->am_kind == TRA_K_STOP) {
        tr_msg_free(m); // stopping another node's actors is not a message
        return true;
    }
    if (am->am_kind == TRA_K_DOWN) {
        rmon_drop(n, from_id, ((Troupe__V1__Down *)tr_msg_body(m))->ref);
    }
    if (am->am_kind == TRA_K_EXIT) {
        rlink_drop(n, (tr_actor_addr){0, actor}, am->am_from);
    }
    if (actor == TR_NODE_EXECUTOR && n->n_opts.serve_executor) {
        serve_exec(n, m);
        return true;
    }
    tr_actor_addr to = {0, actor};
    tr_actor_addr reply = am->am_reply;
    uint64_t corr = am->am_corr;
    uint32_t kind = am->am_kind;
    // The bound of a local mailbox is not a reason to lose a message that
    // crossed the network: it is queued past the bound.
    if (actor == ACTOR_CONTROL || tra_deliver(to, m, TRA_LANE_FORCE) != TR_OK) {
        COUNT(n, s_no_actor);
        tr_msg_free(m);
        if (kind == TRA_K_USER && corr != 0) {
            answer_error(n, reply, corr, TR_ENOTFOUND, "", "no such actor");
        }
    }
    return true;
}

// on_wire handles a frame (one nng message: records, see the notes) that
// came off the PULL socket.
static void
on_wire(tr_node *n, nng_msg *nm)
{
    if (atomic_load_explicit(&n->n_stopping, memory_order_acquire)) {
        return; // tr_node_stop is tearing the links down
    }
    uint32_t pipe = nng_pipe_id(nng_msg_get_pipe(nm));
    size_t left = nng_msg_len(nm);
    const uint8_t *p = nng_msg_body(nm);
    uint64_t actor;
    const uint8_t *env;
    size_t len;
    sender from = {NULL, 0};
    tra_frame_step st = TRA_FRAME_BAD; // an empty frame is refused
    if (left > 0) {
        while ((st = tra_frame_next(&p, &left, &actor, &env, &len)) == TRA_FRAME_REC) {
            if (!on_envelope(n, nm, pipe, &from, actor, env, len)) {
                return;
            }
        }
    }
    if (st == TRA_FRAME_BAD) {
        // A cut or garbled frame (or an empty one): what follows its bad
        // record cannot be found.
        COUNT(n, s_received);
        COUNT(n, s_malformed);
        sender_find(n, pipe, &from);
        if (from.s_peer == NULL) {
            COUNT(n, s_bad_hello);
            nng_pipe_close(nng_msg_get_pipe(nm));
        }
    }
}

// The bridge's state. b_node is NULL once a failed start has let go of
// the node (the bridge then drops what it gets); otherwise tr_node_stop
// waits for the bridge's `stopped` before it frees the node, so the bridge
// never reads a freed node.
typedef struct bridge {
    _Atomic(tr_node *) b_node;
} bridge;

static tr_err
bridge_init(tr_actor *self, void *state, void *arg)
{
    (void)self;
    atomic_init(&((bridge *)state)->b_node, arg);
    return TR_OK;
}

static void
bridge_receive(tr_actor *self, void *state, tr_msg *m)
{
    (void)self;
    tra_msg *am = tra_msg_of(m);
    tr_node *n = atomic_load_explicit(&((bridge *)state)->b_node, memory_order_acquire);
    if (n != NULL && am->am_kind == TRA_K_WIRE && am->am_body != NULL) {
        on_wire(n, am->am_body);
        // The wrapper's free frees the nng message.
    }
}

static void
bridge_stopped(tr_actor *self, void *state, tr_err reason)
{
    (void)self;
    (void)reason;
    tr_node *n = atomic_load_explicit(&((bridge *)state)->b_node, memory_order_acquire);
    if (n != NULL) {
        pthread_mutex_lock(&n->n_lock);
        n->n_bridge_gone = true;
        pthread_cond_broadcast(&n->n_cv);
        pthread_mutex_unlock(&n->n_lock);
    }
}

static const tr_actor_spec bridge_spec = {
    .name = "tr.node.bridge",
    .size = sizeof(bridge),
    .init = bridge_init,
    .receive = bridge_receive,
    .stopped = bridge_stopped,
};

static void
bridge_detach(void *state, void *arg)
{
    (void)arg;
    atomic_store_explicit(&((bridge *)state)->b_node, NULL, memory_order_release);
}

static void
rx_cb(void *arg)
{
    tr_node *n = arg;
    int rv = nng_aio_result(n->n_rx);
    if (rv != 0) {
        if (rv == NNG_ECLOSED || rv == NNG_ECANCELED ||
            atomic_load_explicit(&n->n_stopping, memory_order_acquire)) {
            return;
        }
        nng_recv_aio(n->n_pull, n->n_rx);
        return;
    }
    nng_msg *nm = nng_aio_get_msg(n->n_rx);
    nng_aio_set_msg(n->n_rx, NULL);
    tr_msg *w = tr_msg_alloc(sizeof(wire));
    tra_msg *am = tra_msg_of(w);
    memset((char *)am + sizeof(tr_msg), 0, sizeof(wire) - sizeof(tr_msg));
    am->am_magic = TRA_MSG_MAGIC;
    am->am_kind = TRA_K_WIRE;
    am->am_body = nm;
    am->am_class = w->m_class;
    w->m_class = g_wire_class;
    if (tra_deliver(n->n_bridge, w, TRA_LANE_FORCE) != TR_OK) {
        tr_msg_free(w);
    }
    // Re-armed here, on nng's thread: no wake of a worker just for that.
    nng_recv_aio(n->n_pull, n->n_rx);
}

// pipe_cb runs on an nng thread, under nng's own locks: it must not close a
// socket (nng_close waits for the pipes, this one among them). It marks the
// peer behind the pipe dead (no more sends reach it) and wakes the
// heartbeat task, which frees it on a worker.
static void
pipe_cb(nng_pipe pipe, nng_pipe_ev ev, void *arg)
{
    tr_node *n = arg;
    if (ev != NNG_PIPE_EV_REM_POST) {
        return;
    }
    COUNT(n, s_pipes_closed);
    if (atomic_load_explicit(&n->n_stopping, memory_order_acquire)) {
        return; // node_free closes every link itself
    }
    uint32_t id = nng_pipe_id(pipe);
    tr_waker hb = {NULL, NULL};
    pthread_mutex_lock(&n->n_lock);
    peer *p = peer_by_pipe_locked(n, id);
    if (p != NULL) {
        p->p_up = false;
        p->p_dead = true;
        hb = n->n_hb_waker;
    }
    pthread_mutex_unlock(&n->n_lock);
    tr_wake(hb);
}

// ---------------------------------------------------------------------------
// The heartbeat task.

typedef struct hb_task {
    tr_node *h_node;
    tr_timer h_timer;
    uint64_t h_seq;
    bool h_armed; // h_timer is sleeping towards the next round
} hb_task;

// reap frees the peers that are dead (their pipe closed) or silent for
// longer than dead_after_ms; it returns how many peers are left.
static size_t
reap(tr_node *n, tr_cx *cx)
{
    uint64_t now = now_ns();
    uint64_t dead = (uint64_t)n->n_opts.dead_after_ms * 1000000u;
    peer *gone = NULL;
    size_t left = 0;
    pthread_mutex_lock(&n->n_lock);
    n->n_hb_waker = tr_cx_waker(cx);
    for (peer **pp = &n->n_peers; *pp != NULL;) {
        peer *p = *pp;
        uint64_t seen = atomic_load_explicit(&p->p_last_seen, memory_order_relaxed);
        // The bridge may have stamped it after `now` was read: not silent.
        uint64_t silent = seen > now ? 0 : now - seen;
        if (p->p_dead || (p->p_up && silent > dead)) {
            *pp = p->p_next;
            p->p_next = gone;
            gone = p;
            continue;
        }
        left++;
        pp = &p->p_next;
    }
    pthread_mutex_unlock(&n->n_lock);
    while (gone != NULL) {
        peer *p = gone;
        gone = p->p_next;
        peer_free(n, p, true);
    }
    return left;
}

static void
heartbeats(tr_node *n, hb_task *h)
{
    size_t cnt = 0;
    pthread_mutex_lock(&n->n_lock);
    for (peer *p = n->n_peers; p != NULL; p = p->p_next) {
        cnt++;
    }
    olink **links = tra_zalloc((cnt + 1) * sizeof *links);
    size_t nl = 0;
    for (peer *p = n->n_peers; p != NULL; p = p->p_next) {
        // Links still waiting for the peer's Hello too: the peer counts
        // our silence from the moment it answered.
        if (!p->p_dead) {
            links[nl++] = link_ref(p->p_link);
        }
    }
    pthread_mutex_unlock(&n->n_lock);
    for (size_t i = 0; i < nl; i++) {
        Troupe__V1__Heartbeat *b;
        tr_msg *m = control(&troupe__v1__heartbeat__descriptor, 0, (void **)&b);
        b->seq = ++h->h_seq;
        send_env(n, links[i], ACTOR_CONTROL, m, FULL_DROP);
        link_unref(links[i]);
    }
    free(links);
}

// The heartbeat task: every heartbeat_ms it frees the dead peers and sends
// a Heartbeat on each link; woken early by a closed pipe or a new peer.
// With no peer it sleeps without a timer.
static tr_poll
hb_poll(void *st, tr_cx *cx)
{
    hb_task *h = st;
    tr_node *n = h->h_node;
    for (;;) {
        size_t left = reap(n, cx);
        if (left == 0) {
            tr_timer_abandon(&h->h_timer);
            h->h_armed = false;
            return TR_PENDING; // on_hello wakes it
        }
        if (h->h_armed) {
            if (tr_sleep(&h->h_timer, cx, (uint64_t)n->n_opts.heartbeat_ms * 1000000u) ==
                TR_PENDING) {
                return TR_PENDING;
            }
            h->h_armed = false;
            heartbeats(n, h);
        }
        h->h_armed = true;
    }
}

static void
hb_drop(void *st)
{
    tr_timer_abandon(&((hb_task *)st)->h_timer);
}

static const tr_task_spec hb_spec = {"tr.node.heartbeat", hb_poll, hb_drop, sizeof(hb_task)};

// ---------------------------------------------------------------------------
// The executor, served to other nodes.

// The executor's replies to remote commands arrive on one mailbox per
// runtime that lives as long as the runtime (it is the runtime's local
// value, freed by tr_rt_free): a reply may come long after the node that
// sent the command stopped (a TaskResult of a long task), and reply_to
// must stay valid until the last reply. A pump task forwards what arrives
// while a node serves, and drops it otherwise; pb_lock orders a forward
// with a node's stop.
typedef struct pumpbox {
    tr_mailbox pb_mb;        // first: 64-byte aligned (aligned_alloc)
    pthread_mutex_t pb_lock; // pb_node
    tr_node *pb_node;        // the node forwarding replies, NULL: none
    bool pb_running;         // a pump task runs (under the node start lock)
} pumpbox;

typedef struct pump {
    pumpbox *pu_box;
} pump;

static tr_rt_key g_pump_key;
static pthread_once_t g_pump_once = PTHREAD_ONCE_INIT;

static void
pumpbox_fini(tr_rt *rt, void *value)
{
    (void)rt;
    pumpbox *pb = value;
    tr_mailbox_fini(&pb->pb_mb, NULL, NULL); // no task is left to push
    pthread_mutex_destroy(&pb->pb_lock);
    free(pb);
}

static void
pump_key(void)
{
    if (tr_rt_key_create(&g_pump_key, pumpbox_fini) != TR_OK) {
        tra_panic("tr_rt_key_create failed");
    }
}

static void
route_add(tr_node *n, uint64_t corr, tr_actor_addr to, bool want_result)
{
    pthread_mutex_lock(&n->n_lock);
    if (n->n_nroutes == n->n_caproutes) {
        size_t cap = n->n_caproutes == 0 ? 16 : n->n_caproutes * 2;
        exec_route *r = realloc(n->n_routes, cap * sizeof *r);
        if (r == NULL) {
            tra_panic("out of memory");
        }
        n->n_routes = r;
        n->n_caproutes = cap;
    }
    n->n_routes[n->n_nroutes++] = (exec_route){corr, to, want_result};
    pthread_mutex_unlock(&n->n_lock);
}

// route_take finds where the reply with corr goes; final says whether it
// is the last reply of its command (the route is then removed).
static bool
route_take(tr_node *n, uint64_t corr, bool first_of_two, tr_actor_addr *to)
{
    bool found = false;
    pthread_mutex_lock(&n->n_lock);
    for (size_t i = 0; i < n->n_nroutes; i++) {
        exec_route *r = &n->n_routes[i];
        if (r->er_corr == corr) {
            *to = r->er_to;
            found = true;
            if (first_of_two && r->er_want_result) {
                r->er_want_result = false; // the TaskResult is still to come
            } else {
                *r = n->n_routes[--n->n_nroutes];
            }
            break;
        }
    }
    pthread_mutex_unlock(&n->n_lock);
    return found;
}

static void *
arena_alloc(void *data, size_t size)
{
    return tr_msg_arena(data, size);
}

static void
arena_free(void *data, void *p)
{
    (void)data;
    (void)p; // the arena goes with its message
}

static void
forward_reply(tr_node *n, tr_exec_reply *er)
{
    const Troupe__V1__ExecutorReply *r = er->reply;
    bool spawned = r->reply_case == TROUPE__V1__EXECUTOR_REPLY__REPLY_SPAWNED;
    tr_actor_addr to;
    if (!route_take(n, r->correlation_id, spawned, &to)) {
        return;
    }
    // The executor's reply is one block of its own: copy it into an actor
    // message (packed, then unpacked into the message's arena; replies are
    // small).
    size_t len = troupe__v1__executor_reply__get_packed_size(r);
    uint8_t stack[512];
    uint8_t *buf = len <= sizeof stack ? stack : tra_zalloc(len);
    troupe__v1__executor_reply__pack(r, buf);
    void *unused;
    tr_msg *m = tr_msg_new(&troupe__v1__executor_reply__descriptor, 2 * len + 128, &unused);
    ProtobufCAllocator al = {arena_alloc, arena_free, m};
    ProtobufCMessage *body =
        protobuf_c_message_unpack(&troupe__v1__executor_reply__descriptor, &al, len, buf);
    if (buf != stack) {
        free(buf);
    }
    if (body == NULL) {
        tr_msg_free(m);
        return;
    }
    tra_msg *am = tra_msg_of(m);
    am->am_body = body;
    // A message to whoever sent the command (with its correlation id), not
    // the answer to a tr_actor_request: an actor's receive gets it.
    am->am_kind = TRA_K_USER;
    am->am_corr = r->correlation_id;
    if (tra_node_deliver(to, m, TRA_LANE_FORCE) != TR_OK) {
        tr_msg_free(m);
    }
}

static tr_poll
pump_poll(void *st, tr_cx *cx)
{
    pumpbox *pb = ((pump *)st)->pu_box;
    tr_msg *batch[32];
    for (;;) {
        size_t k = tr_mailbox_take(&pb->pb_mb, batch, 32);
        if (k == 0) {
            if (tr_mailbox_markempty(&pb->pb_mb, tr_cx_waker(cx))) {
                return TR_PENDING;
            }
            tr_cx_yield(cx);
            return TR_PENDING;
        }
        for (size_t i = 0; i < k; i++) {
            tr_exec_reply *er = tr_exec_reply_of(batch[i]);
            pthread_mutex_lock(&pb->pb_lock);
            if (er != NULL && pb->pb_node != NULL) {
                forward_reply(pb->pb_node, er);
            }
            pthread_mutex_unlock(&pb->pb_lock);
            tr_msg_free(batch[i]);
        }
    }
}

// (No drop: the mailbox is the runtime's, finalised by tr_rt_free.)
static const tr_task_spec pump_spec = {"tr.node.exec_replies", pump_poll, NULL, sizeof(pump)};

// pump_attach makes n the node that forwards the executor's replies (and
// starts the runtime's pump the first time). Under g_node_lock.
static tr_err
pump_attach(tr_node *n)
{
    pthread_once(&g_pump_once, pump_key);
    pumpbox *pb = tr_rt_local_get(n->n_rt, g_pump_key);
    if (pb == NULL) {
        pb = aligned_alloc(64, (sizeof *pb + 63) & ~(size_t)63);
        if (pb == NULL) {
            tra_panic("out of memory");
        }
        memset(pb, 0, sizeof *pb);
        tr_mailbox_init(&pb->pb_mb, 0);
        pthread_mutex_init(&pb->pb_lock, NULL);
        tr_rt_local_set(n->n_rt, g_pump_key, pb);
    }
    if (!pb->pb_running) {
        pump init = {pb};
        tr_err err = tr_spawn(n->n_rt, &pump_spec, NULL, &init, NULL);
        if (err != TR_OK) {
            return err;
        }
        pb->pb_running = true;
    }
    pthread_mutex_lock(&pb->pb_lock);
    pb->pb_node = n;
    pthread_mutex_unlock(&pb->pb_lock);
    n->n_pumpbox = pb;
    n->n_exec_mb = &pb->pb_mb;
    return TR_OK;
}

static void
pump_detach(tr_node *n)
{
    pumpbox *pb = n->n_pumpbox;
    if (pb != NULL) {
        pthread_mutex_lock(&pb->pb_lock);
        pb->pb_node = NULL; // replies that come later are dropped
        pthread_mutex_unlock(&pb->pb_lock);
    }
}

// exec_error answers a command this node refuses as the executor answers
// the ones it refuses: an ExecutorReply with an Error, under the command's
// correlation id.
static void
exec_error(tr_node *n, tr_actor_addr to, uint64_t cc, tr_err code, const char *detail)
{
    (void)n;
    if (tr_actor_addr_is_none(to)) {
        return;
    }
    Troupe__V1__ExecutorReply *r;
    tr_msg *m = tr_msg_new(&troupe__v1__executor_reply__descriptor, 256, (void **)&r);
    Troupe__V1__Error *e = tr_msg_arena(m, sizeof *e);
    troupe__v1__error__init(e);
    e->code = (int32_t)code;
    e->name = tr_msg_strdup(m, tr_err_name(code));
    e->detail = tr_msg_strdup(m, detail);
    r->correlation_id = cc;
    r->reply_case = TROUPE__V1__EXECUTOR_REPLY__REPLY_ERROR;
    r->error = e;
    if (tra_node_deliver(to, m, TRA_LANE_FORCE) != TR_OK) {
        tr_msg_free(m);
    }
}

// exec_done answers a command with Done.
static void
exec_done(tr_actor_addr to, uint64_t cc)
{
    if (tr_actor_addr_is_none(to)) {
        return;
    }
    Troupe__V1__ExecutorReply *r;
    tr_msg *m = tr_msg_new(&troupe__v1__executor_reply__descriptor, 128, (void **)&r);
    Troupe__V1__Done *d = tr_msg_arena(m, sizeof *d);
    troupe__v1__done__init(d);
    r->correlation_id = cc;
    r->reply_case = TROUPE__V1__EXECUTOR_REPLY__REPLY_DONE;
    r->done = d;
    if (tra_node_deliver(to, m, TRA_LANE_FORCE) != TR_OK) {
        tr_msg_free(m);
    }
}

static void
serve_exec(tr_node *n, tr_msg *m)
{
    tra_msg *am = tra_msg_of(m);
    tr_actor_addr reply = am->am_reply;
    uint64_t corr = am->am_corr;
    if (!tr_msg_is(m, &troupe__v1__executor_command__descriptor)) {
        answer_error(n, reply, corr, TR_EINVAL, tr_msg_descriptor(m)->name,
                     "the executor takes ExecutorCommand messages");
        tr_msg_free(m);
        return;
    }
    Troupe__V1__ExecutorCommand *cmd = tr_msg_body(m);
    bool want_result = false;
    if (cmd->command_case == TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SPAWN && cmd->spawn != NULL) {
        const Troupe__V1__TaskSpec *ts =
            cmd->spawn->task_case == TROUPE__V1__SPAWN__TASK_SPEC ? cmd->spawn->spec : NULL;
        if (ts == NULL || !tr_kind_is_remote(n->n_rt, ts->kind)) {
            exec_error(n, reply, cmd->correlation_id, TR_EPERM,
                       "that kind cannot be spawned from another node");
            tr_msg_free(m);
            return;
        }
        want_result = cmd->spawn->want_result;
    }
    if (cmd->command_case == TROUPE__V1__EXECUTOR_COMMAND__COMMAND_SHUTDOWN) {
        if (!n->n_opts.serve_shutdown) {
            exec_error(n, reply, cmd->correlation_id, TR_EPERM,
                       "another node cannot shut this one down");
        } else {
            // Done goes out first, while the link still stands: the
            // shutdown cancels the tasks that would forward the
            // executor's own reply.
            tr_err err = tr_exec_send(n->n_rt, cmd, NULL);
            if (err != TR_OK) {
                exec_error(n, reply, cmd->correlation_id, err, tr_strerror(err));
            } else {
                exec_done(reply, cmd->correlation_id);
            }
        }
        tr_msg_free(m);
        return;
    }
    // Replies carry the command's own correlation id.
    uint64_t cc = cmd->correlation_id;
    bool routed = !tr_actor_addr_is_none(reply) && n->n_exec_mb != NULL;
    if (routed) {
        route_add(n, cc, reply, want_result);
    }
    tr_err err = tr_exec_send(n->n_rt, cmd, routed ? n->n_exec_mb : NULL);
    if (err != TR_OK) {
        if (routed) {
            tr_actor_addr dummy;
            route_take(n, cc, false, &dummy);
        }
        exec_error(n, reply, cc, err, tr_strerror(err));
    }
    tr_msg_free(m);
}

// ---------------------------------------------------------------------------
// Starting and stopping.

static bool
loopback_host(const char *hostport)
{
    return strncmp(hostport, "127.", 4) == 0 || strncmp(hostport, "localhost:", 10) == 0 ||
           strncmp(hostport, "[::1]:", 6) == 0;
}

static tr_err
check_url(const tr_node_opts *o)
{
    const char *u = o->listen;
    if (u == NULL) {
        return TR_EINVAL;
    }
    if (strncmp(u, "inproc://", 9) == 0 || strncmp(u, "ipc://", 6) == 0) {
        return TR_OK;
    }
    if (strncmp(u, "tls+tcp://", 10) == 0) {
        return (o->token != NULL && o->token[0] != '\0' && o->tls_cert_key_file != NULL)
                   ? TR_OK
                   : TR_EINVAL;
    }
    if (strncmp(u, "tcp://", 6) == 0) {
        return (o->allow_plain_tcp && loopback_host(u + 6) && o->token != NULL) ? TR_OK : TR_EINVAL;
    }
    return TR_EINVAL;
}

static void node_free(tr_node *n, bool wait_bridge);

// bound_url returns the URL peers dial: u, with the real port when port 0
// was asked for.
static char *
bound_url(tr_node *n, const char *u)
{
    const char *colon = strrchr(u, ':');
    if ((strncmp(u, "tcp://", 6) == 0 || strncmp(u, "tls+tcp://", 10) == 0) && colon != NULL &&
        strcmp(colon, ":0") == 0) {
        int port = 0;
        nng_listener_get_int(n->n_listener, NNG_OPT_TCP_BOUND_PORT, &port);
        size_t len = (size_t)(colon - u) + 16;
        char *url = tra_zalloc(len);
        snprintf(url, len, "%.*s:%d", (int)(colon - u), u, port);
        return url;
    }
    return tra_strdup(u);
}

static void
hb_init(void *st, void *arg)
{
    ((hb_task *)st)->h_node = arg;
}

tr_err
tr_node_start(tr_rt *rt, const tr_node_opts *opts, tr_node **out)
{
    if (rt == NULL || opts == NULL || out == NULL || check_url(opts) != TR_OK) {
        return TR_EINVAL;
    }
    pthread_mutex_lock(&g_node_lock);
    if (atomic_load(&g_node) != NULL) {
        pthread_mutex_unlock(&g_node_lock);
        return TR_EBUSY;
    }
    if (g_wire_class == 0) {
        g_wire_class = tr_msg_class_register(wire_free);
        if (g_wire_class == 0) {
            pthread_mutex_unlock(&g_node_lock);
            return TR_EFULL;
        }
        tra_msg_class_add(g_wire_class);
    }
    tr_node *n = tra_zalloc(sizeof *n);
    n->n_rt = rt;
    n->n_opts = *opts;
    if (n->n_opts.recv_max == 0) {
        n->n_opts.recv_max = TR_NODE_RECV_MAX_DEFAULT;
    }
    if (n->n_opts.heartbeat_ms == 0) {
        n->n_opts.heartbeat_ms = 500;
    }
    if (n->n_opts.dead_after_ms == 0) {
        n->n_opts.dead_after_ms = 5000;
    }
    if (n->n_opts.sendbuf == 0) {
        n->n_opts.sendbuf = 1024;
    }
    n->n_token = tra_strdup(opts->token);
    pthread_mutex_init(&n->n_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&n->n_cv, &ca);
    pthread_condattr_destroy(&ca);
    do {
        if (getrandom(&n->n_id, sizeof n->n_id, 0) != sizeof n->n_id) {
            n->n_id = now_ns() ^ ((uint64_t)getpid() << 32);
        }
    } while (n->n_id == 0);
    tr_err err = TR_OK;
    int rv;
    if ((rv = nng_pull0_open(&n->n_pull)) != 0) {
        err = tr_err_from_nng(rv);
        goto fail;
    }
    nng_socket_set_size(n->n_pull, NNG_OPT_RECVMAXSZ, n->n_opts.recv_max);
    nng_socket_set_int(n->n_pull, NNG_OPT_RECVBUF, 1024);
    nng_pipe_notify(n->n_pull, NNG_PIPE_EV_REM_POST, pipe_cb, n);
    if (opts->tls_cert_key_file != NULL || opts->tls_ca_file != NULL) {
        if (opts->tls_cert_key_file != NULL) {
            if ((rv = nng_tls_config_alloc(&n->n_tls_server, NNG_TLS_MODE_SERVER)) != 0 ||
                (rv = nng_tls_config_cert_key_file(n->n_tls_server, opts->tls_cert_key_file,
                                                   NULL)) != 0) {
                err = tr_err_from_nng(rv);
                goto fail;
            }
        }
        if ((rv = nng_tls_config_alloc(&n->n_tls_client, NNG_TLS_MODE_CLIENT)) != 0) {
            err = tr_err_from_nng(rv);
            goto fail;
        }
        if (opts->tls_ca_file != NULL) {
            if ((rv = nng_tls_config_ca_file(n->n_tls_client, opts->tls_ca_file)) != 0) {
                err = tr_err_from_nng(rv);
                goto fail;
            }
            nng_tls_config_auth_mode(n->n_tls_client, NNG_TLS_AUTH_MODE_REQUIRED);
        }
        nng_tls_config_server_name(
            n->n_tls_client, opts->tls_server_name != NULL ? opts->tls_server_name : "localhost");
    }
    if ((rv = nng_listener_create(&n->n_listener, n->n_pull, opts->listen)) != 0) {
        err = tr_err_from_nng(rv);
        goto fail;
    }
    if (n->n_tls_server != NULL && strncmp(opts->listen, "tls+tcp://", 10) == 0) {
        nng_listener_set_ptr(n->n_listener, NNG_OPT_TLS_CONFIG, n->n_tls_server);
    }
    if ((rv = nng_listener_start(n->n_listener, 0)) != 0) {
        err = tr_err_from_nng(rv);
        goto fail;
    }
    n->n_url = bound_url(n, opts->listen);
    // The bridge, then the receive.
    if ((err = tr_actor_spawn(rt, &bridge_spec, n, NULL, &n->n_bridge)) != TR_OK) {
        goto fail;
    }
    if (opts->serve_executor) {
        if ((err = pump_attach(n)) != TR_OK) {
            goto fail;
        }
    }
    if ((err = tr_spawn(rt, &hb_spec, hb_init, n, &n->n_hb)) != TR_OK) {
        goto fail;
    }
    if ((rv = nng_aio_alloc(&n->n_rx, rx_cb, n)) != 0) {
        err = tr_err_from_nng(rv);
        goto fail;
    }
    atomic_store_explicit(&g_node, n, memory_order_release);
    pthread_mutex_unlock(&g_node_lock);
    nng_recv_aio(n->n_pull, n->n_rx);
    *out = n;
    return TR_OK;
fail:
    pthread_mutex_unlock(&g_node_lock);
    node_free(n, false);
    return err;
}

static void
node_free(tr_node *n, bool wait_bridge)
{
    atomic_store_explicit(&n->n_stopping, true, memory_order_release);
    // The heartbeat task first: from here on one thread closes every
    // socket, one at a time (else the task may free a peer whose pipe the
    // listener's close just dropped, closing its socket meanwhile).
    if (n->n_hb.j_key != 0) {
        tr_task_abort(&n->n_hb);
        tr_join_wait(&n->n_hb, NULL);
    }
    if (n->n_rx != NULL) {
        nng_aio_stop(n->n_rx);
        // After the stop, a message still held by the aio is the stopper's.
        nng_msg *left = nng_aio_get_msg(n->n_rx);
        if (left != NULL) {
            nng_msg_free(left);
        }
    }
    if (n->n_pull.id != 0) {
        // The listener first: no pipe is being accepted while the socket
        // closes.
        if (n->n_listener.id != 0) {
            nng_listener_close(n->n_listener);
        }
        nng_close(n->n_pull);
    }
    if (n->n_rx != NULL) {
        nng_aio_free(n->n_rx);
    }
    pthread_mutex_lock(&n->n_lock);
    peer *ps = n->n_peers;
    n->n_peers = NULL;
    pthread_mutex_unlock(&n->n_lock);
    while (ps != NULL) {
        peer *p = ps;
        ps = p->p_next;
        peer_free(n, p, false);
    }
    pump_detach(n);
    if (!tr_actor_addr_is_none(n->n_bridge)) {
        if (!wait_bridge) {
            // A failed start (the runtime may not run yet): let go.
            tra_with_state(n->n_bridge, &bridge_spec, bridge_detach, NULL);
        }
        if (tr_actor_stop_other(n->n_bridge, TR_OK, NULL) == TR_OK && wait_bridge) {
            // It may still be handling messages received before the stop:
            // they read n.
            pthread_mutex_lock(&n->n_lock);
            while (!n->n_bridge_gone) {
                pthread_cond_wait(&n->n_cv, &n->n_lock);
            }
            pthread_mutex_unlock(&n->n_lock);
        }
    }
    if (n->n_tls_server != NULL) {
        nng_tls_config_free(n->n_tls_server);
    }
    if (n->n_tls_client != NULL) {
        nng_tls_config_free(n->n_tls_client);
    }
    free(n->n_routes);
    free(n->n_url);
    free(n->n_token);
    pthread_cond_destroy(&n->n_cv);
    pthread_mutex_destroy(&n->n_lock);
    free(n);
}

tr_err
tr_node_stop(tr_node *n)
{
    if (n == NULL) {
        return TR_EINVAL;
    }
    pthread_mutex_lock(&g_node_lock);
    if (atomic_load(&g_node) == n) {
        atomic_store_explicit(&g_node, NULL, memory_order_release);
    }
    pthread_mutex_unlock(&g_node_lock);
    node_free(n, true);
    return TR_OK;
}

uint64_t
tr_node_id(const tr_node *n)
{
    return n->n_id;
}

const char *
tr_node_listen_url(const tr_node *n)
{
    return n->n_url;
}

// wait_for waits (n_lock held) until w is done or the deadline passes.
static void
wait_for(tr_node *n, waitreq *w, uint32_t timeout_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_MONOTONIC, &dl);
    dl.tv_sec += timeout_ms / 1000;
    dl.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    while (!w->w_done) {
        if (pthread_cond_timedwait(&n->n_cv, &n->n_lock, &dl) != 0) {
            break;
        }
    }
    for (waitreq **pp = &n->n_waits; *pp != NULL; pp = &(*pp)->w_next) {
        if (*pp == w) {
            *pp = w->w_next;
            break;
        }
    }
}

tr_err
tr_node_connect(tr_node *n, const char *url, uint32_t timeout_ms, uint64_t *peer_id)
{
    if (n == NULL || url == NULL) {
        return TR_EINVAL;
    }
    waitreq w = {.w_url = url, .w_err = TR_ETIMEDOUT};
    pthread_mutex_lock(&n->n_lock);
    peer *p = peer_by_url_locked(n, url);
    if (p != NULL && p->p_up) {
        uint64_t id = p->p_id;
        pthread_mutex_unlock(&n->n_lock);
        if (peer_id != NULL) {
            *peer_id = id;
        }
        return TR_OK;
    }
    bool fresh = p == NULL;
    if (fresh) {
        p = tra_zalloc(sizeof *p);
        p->p_url = tra_strdup(url);
        tr_err err = link_open(n, url, &p->p_link, &p->p_dialer);
        if (err != TR_OK) {
            pthread_mutex_unlock(&n->n_lock);
            free(p->p_url);
            free(p);
            return err;
        }
        p->p_next = n->n_peers;
        n->n_peers = p;
    }
    w.w_next = n->n_waits;
    n->n_waits = &w;
    olink *l = link_ref(p->p_link);
    pthread_mutex_unlock(&n->n_lock);
    send_control(n, l, hello_msg(n, url));
    pthread_mutex_lock(&n->n_lock);
    wait_for(n, &w, timeout_ms);
    pthread_mutex_unlock(&n->n_lock);
    if (w.w_done && peer_id != NULL) {
        *peer_id = w.w_peer;
    }
    return w.w_done ? w.w_err : TR_ETIMEDOUT;
}

tr_err
tr_node_whereis(tr_node *n, uint64_t peer_id, const char *name, uint32_t timeout_ms,
                tr_actor_addr *addr)
{
    if (n == NULL || name == NULL) {
        return TR_EINVAL;
    }
    static _Atomic uint64_t next = 1;
    waitreq w = {.w_corr = atomic_fetch_add(&next, 1), .w_err = TR_ETIMEDOUT};
    Troupe__V1__WhereisReq *r;
    tr_msg *m = control(&troupe__v1__whereis_req__descriptor, strlen(name) + 16, (void **)&r);
    r->name = tr_msg_strdup(m, name);
    tra_msg_of(m)->am_corr = w.w_corr;
    pthread_mutex_lock(&n->n_lock);
    w.w_next = n->n_waits;
    n->n_waits = &w;
    pthread_mutex_unlock(&n->n_lock);
    tr_err err = tra_node_deliver((tr_actor_addr){peer_id, ACTOR_CONTROL}, m, TRA_LANE_FORCE);
    pthread_mutex_lock(&n->n_lock);
    if (err != TR_OK) {
        w.w_done = true;
        w.w_err = TR_ENOTCONN;
        tr_msg_free(m);
    }
    wait_for(n, &w, timeout_ms);
    pthread_mutex_unlock(&n->n_lock);
    if (w.w_done && w.w_err == TR_OK && addr != NULL) {
        *addr = w.w_addr;
    }
    return w.w_done ? w.w_err : TR_ETIMEDOUT;
}

bool
tr_node_peer_up(tr_node *n, uint64_t peer_id)
{
    pthread_mutex_lock(&n->n_lock);
    bool up = peer_by_id_locked(n, peer_id) != NULL;
    pthread_mutex_unlock(&n->n_lock);
    return up;
}

void
tr_node_stats_get(tr_node *n, tr_node_stats *out)
{
#define LD(f) atomic_load_explicit(&n->f, memory_order_relaxed)
    *out = (tr_node_stats){
        .sent = LD(s_sent),
        .frames_sent = LD(s_frames),
        .received = LD(s_received),
        .send_full = LD(s_send_full),
        .send_parked = LD(s_parked),
        .park_lost = LD(s_park_lost),
        .unknown_type = LD(s_unknown),
        .malformed = LD(s_malformed),
        .too_deep = LD(s_too_deep),
        .over_budget = LD(s_over_budget),
        .no_actor = LD(s_no_actor),
        .errors_answered = LD(s_errors),
        .pipes_closed = LD(s_pipes_closed),
        .bad_hello = LD(s_bad_hello),
        .peers_down = LD(s_peers_down),
    };
#undef LD
    pthread_mutex_lock(&n->n_lock);
    for (peer *p = n->n_peers; p != NULL; p = p->p_next) {
        out->peers += p->p_up ? 1 : 0;
    }
    pthread_mutex_unlock(&n->n_lock);
}
