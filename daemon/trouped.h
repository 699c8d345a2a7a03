// trouped.h: what trouped.c (main, the control endpoint, the control actor)
// and runner.c (the job runner actor) share. Internal to the daemon (trd_).
//
// Threads and hand-offs, so that no nng callback and no store callback
// ever blocks:
// - nng aio callbacks (nng's threads) move a request into its slot and send
//   the control actor a CtlIn naming the slot; they re-arm receives.
// - The control actor (a worker) decodes and answers, or hands the slot on:
//   a Submit to the store (whose done callback, on the store thread,
//   replies and tells the runner), a WaitJobs to the runner.
// - A slot is owned by exactly one party at a time: nng while it receives
//   or sends, otherwise whoever holds the CtlIn/WaitIn or the store write
//   that names it. Whoever owns it replies exactly once (trd_reply).
#ifndef TRD_TROUPED_H
#define TRD_TROUPED_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <nng/nng.h>
#include <troupe/actor.h>
#include <troupe/v1/control.pb-c.h>

#include "config.h"
#include "request.h"
#include "store.h"

#define TRD_VERSION TROUPE_VERSION // the project's, from CMake
// Control contexts: requests served at once (a WaitJobs holds one until it
// ends, so this also bounds concurrent waits).
#define TRD_CONTEXTS 128
// Connections (pipes) to the control socket at once; more are closed as
// they come (counted in d_pipes_refused).
#define TRD_PIPES_MAX 1024
// NNG_OPT_RECVMAXSZ of the control socket; the client refuses to send more.
#define TRD_RECV_MAX ((size_t)4 << 20)
// TRD_OUTPUT_CAP_DEFAULT, TRD_MAX_QUEUED_DEFAULT: config.h.
// The longest a WaitJobs holds its context (the client asks again).
#define TRD_WAIT_MAX_MS 30000u
// TRD_IDS_MAX, the most ids one request names: request.h.

enum { SLOT_RECV = 0, SLOT_BUSY = 1, SLOT_SEND = 2 };

typedef struct trd_daemon trd_daemon;

typedef struct trd_slot {
    trd_daemon *s_d;
    uint32_t s_idx;
    nng_ctx s_ctx;
    nng_aio *s_aio;
    // The request while the slot is busy: set by the receive callback,
    // taken by the control actor (the CtlIn orders the two).
    nng_msg *s_req;
    // Which side owns the slot; written by the owner before it hands the
    // slot on (through nng or a message, which order the accesses).
    int s_state;
    // Set with the reply to a Shutdown: once it has gone, the slot's
    // callback casts the reply's vote to stop (trd_stop_vote).
    bool s_stop_after;
} trd_slot;

struct trd_daemon {
    trd_store *d_store;
    tr_rt *d_rt;
    const char *d_state_dir;
    char d_out_dir[4096];
    unsigned d_cores;
    uint64_t d_start_ms;
    nng_socket d_sock;
    trd_slot d_slots[TRD_CONTEXTS];
    // The PUB socket of JobEvents (d_events_url "" : none), and how many
    // subscribers' pipes it has (events are not built when none).
    nng_socket d_pub;
    char d_events_url[4200];
    _Atomic int d_subscribers;
    _Atomic int d_pipes;              // the control socket's pipes
    _Atomic uint64_t d_pipes_refused; // closed past TRD_PIPES_MAX
    uint64_t d_output_cap;            // per stream, for jobs that set none
    uint32_t d_max_running;           // jobs running at once, over all groups (0: no cap)
    const char *d_cgroup_mode;        // trd_cgroup_setup's mode (NULL: auto)
    // The bearer token requests from a tcp pipe must carry ("" : no tcp
    // listener), and that listener's URL as bound.
    char d_token[256];
    char d_tcp_url[512];
    // A Shutdown request stops the daemon when both its reply has gone and
    // the runner has drained (two votes); main then learns why it stops.
    _Atomic int d_stop_votes;
    _Atomic bool d_stop_requested;
    // The pipe a Shutdown request came on (its id; 0: none yet): trouped
    // closes its sockets once that pipe is gone (the client has its reply)
    // or three seconds have passed, so the reply is not lost in the close.
    _Atomic uint32_t d_shutdown_pipe;
    pthread_mutex_t d_sp_lock;
    pthread_cond_t d_sp_cond; // CLOCK_MONOTONIC
    bool d_sp_gone;           // under d_sp_lock
    tr_actor_addr d_control;  // set before the socket opens, then read only
    tr_actor_addr d_runner;
    // Set by main before it closes the socket; read by the callbacks, which
    // then stop re-arming, and by trd_reply, which then drops its reply.
    _Atomic bool d_stopping;
    // Calls of trd_reply and trd_publish inside nng right now (from the
    // store thread, a worker, the blocking pool): main waits for none
    // before it closes the sockets, since nng 1.5.2's close frees a
    // context under a send still running on another thread (its mutex:
    // "pthread_mutex_lock: Invalid argument" and an abort). d_rp_lock and
    // d_rp_cond wake main.
    _Atomic uint32_t d_replying;
    pthread_mutex_t d_rp_lock;
    pthread_cond_t d_rp_cond;
};

// trd_log writes one key=value line to stderr: "ts=... event=EVENT " and
// then fmt (the caller's key=value pairs; quote values with trd_q).
void trd_log(const char *event, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// trd_now_ms returns the wall clock in ms since the epoch.
int64_t trd_now_ms(void);

// trd_reply packs reply (a ControlReply message) and sends it through slot
// idx's context, without blocking. Takes ownership of reply. The slot's
// owner, any thread.
void trd_reply(trd_daemon *d, uint32_t idx, tr_msg *reply);

// trd_reply_error replies with a ControlError: code, its name, and the
// detail printf-style. As trd_reply.
void trd_reply_error(trd_daemon *d, uint32_t idx, tr_err code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

// trd_offload runs fn(arg) on the runtime's blocking pool (store and file
// reads: never on a worker); fn owns arg. discard(arg) (may be NULL) runs
// instead when the runtime stops before fn could. Never blocks. Any thread.
void trd_offload(trd_daemon *d, void (*fn)(void *arg), void (*discard)(void *arg), void *arg);

// trd_reply_new returns a ControlReply message to fill, *out its body.
tr_msg *trd_reply_new(Troupe__V1__ControlReply **out);

// trd_reply_submitted replies to a Submit with its jobs' ids (Submitted).
// As trd_reply.
void trd_reply_submitted(trd_daemon *d, uint32_t idx, uint64_t first_id, uint32_t count,
                         bool repeated);

// trd_reply_ack replies with an Ack; with stop_after, the daemon stops
// once it has gone and the runner has voted too (a Shutdown). As trd_reply.
void trd_reply_ack(trd_daemon *d, uint32_t idx, bool stop_after);

// trd_stop_vote casts one of the two votes a Shutdown needs; the second
// makes main stop the daemon (SIGTERM to ourselves). Any thread.
void trd_stop_vote(trd_daemon *d);

// trd_events_wanted says whether anyone subscribes to job events (an
// event not wanted need not be built). Any thread.
bool trd_events_wanted(trd_daemon *d);

// trd_publish sends a JobEvent for job id on the PUB socket (state change
// when stream is 0, else len output bytes at offset), without blocking:
// dropped when no one listens or the socket is closed. Any thread.
void trd_publish(trd_daemon *d, uint64_t id, uint64_t seq, trd_job_state st, uint32_t stream,
                 uint64_t offset, const void *data, size_t len);

// trd_reply_jobs replies with a JobList of the stored jobs ids (n of
// them, copied), or with an error naming the first id that is not stored
// (what, a static string, starts its detail: "status", "wait"); the reads
// and the reply run on the blocking pool. Owns slot idx from then on. Any
// thread.
void trd_reply_jobs(trd_daemon *d, uint32_t idx, const char *what, const uint64_t *ids, size_t n,
                    bool timed_out);

// trd_job_info returns a JobInfo in m's arena made from r (strings copied).
Troupe__V1__JobInfo *trd_job_info(tr_msg *m, const trd_job_rec *r);

// trd_runner_start spawns the runner actor (its init recovers the jobs the
// store holds unfinished: blocking reads, on the calling thread) and sets
// d->d_runner. Main, before the control socket opens.
tr_err trd_runner_start(trd_daemon *d);

#endif
