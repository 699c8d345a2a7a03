// troupe/client.h: a small C client of trouped's control protocol
// (proto/troupe/v1/control.proto over nng REQ/REP). The troupe CLI uses it;
// so may any program that submits jobs and waits for them.
//
//     tr_client *c;
//     if (tr_client_connect("ipc:///run/troupe/trouped.sock", &c) != TR_OK) { ... }
//     uint64_t first; uint32_t n;
//     tr_client_submit(c, batch, &first, &n);  // batch: a SubmitBatch
//     tr_msg *jobs;                            // ControlReply with a JobList
//     tr_client_wait(c, ids, nids, 0, &jobs, NULL);
//     tr_msg_free(jobs);
//     tr_client_close(c);
//
// Every call blocks its thread until the reply (or the call's timeout).
// One handle may be used from several threads at once: each call opens a
// context of its own. Errors are tr_err codes: the daemon's ControlError
// code when it answered with one (tr_client_error then holds its detail),
// TR_ETIMEDOUT, TR_ECONNREFUSED and friends for transport failures.
//
// Re-sends: nng's REQ re-sends a request when its pipe closes or a timer
// passes. The client turns the timer off (NNG_OPT_REQ_RESENDTIME 0) and
// owns its timeouts; a Submit carries a fresh random request id, so a
// re-send after a lost reply is one batch, not two.
#ifndef TROUPE_CLIENT_H
#define TROUPE_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <troupe/actor.h>
#include <troupe/err.h>
#include <troupe/v1/control.pb-c.h>
#include <troupe/v1/job.pb-c.h>

// The largest request the daemon receives (its NNG_OPT_RECVMAXSZ): nng
// drops a larger one's pipe without an answer, so the client refuses it
// first (TR_ETOOBIG).
#define TR_CLIENT_MAX_REQUEST ((size_t)4 << 20)
// A call's timeout unless tr_client_set_timeout changes it.
#define TR_CLIENT_TIMEOUT_MS 10000u

typedef struct tr_client tr_client;

// tr_client_connect opens a REQ socket and dials url without waiting for
// the daemon (nng redials in the background; the first call waits for it
// up to its timeout). TR_OK and *out (the caller frees it with
// tr_client_close), or TR_EINVAL (a bad URL) and nng's other errors
// mapped. Any thread.
tr_err tr_client_connect(const char *url, tr_client **out);

// tr_client_close closes the socket and frees c. Not while a call runs.
void tr_client_close(tr_client *c);

// tr_client_set_timeout sets how long a call waits for its reply (ms; 0:
// TR_CLIENT_TIMEOUT_MS). A wait adds its own wait time to it.
void tr_client_set_timeout(tr_client *c, uint32_t ms);

// tr_client_error returns the detail of the calling thread's last failed
// call ("" when none). Valid until the thread's next call.
const char *tr_client_error(void);

// tr_client_call sends req, a ControlRequest message (tr_msg_new), with
// its version set to 1, and waits timeout_ms (0: the client's timeout) for
// the reply. Takes ownership of req in every case. TR_OK and *reply (a
// ControlReply message; the caller frees it with tr_msg_free), or an
// error: the daemon's ControlError code (no *reply then), TR_ETOOBIG (the
// request is over TR_CLIENT_MAX_REQUEST: not sent), TR_ETIMEDOUT,
// transport errors. Blocks. Any thread.
tr_err tr_client_call(tr_client *c, tr_msg *req, uint32_t timeout_ms, tr_msg **reply);

// tr_client_ping asks the daemon for its version: TR_OK and the version
// in ver (verlen bytes, may be 0). Blocks.
tr_err tr_client_ping(tr_client *c, char *ver, size_t verlen);

// tr_client_submit submits batch (only read; job_count is set from n_jobs
// on a copy when it is 0) under a fresh request id: TR_OK with the jobs'
// ids *first_id .. *first_id + *count - 1, once the daemon has committed
// them. Blocks.
tr_err tr_client_submit(tr_client *c, const Troupe__V1__SubmitBatch *batch, uint64_t *first_id,
                        uint32_t *count);

// tr_client_status reads jobs ids[0..n): TR_OK and *reply, a ControlReply
// whose jobs (a JobList) hold one JobInfo per id in order; the caller
// frees it. TR_ENOTFOUND names the unknown id in tr_client_error. Blocks.
tr_err tr_client_status(tr_client *c, const uint64_t *ids, size_t n, tr_msg **reply);

// tr_client_wait waits until every job of ids is final, or timeout_ms
// passes (0: no limit; the client asks again each time the daemon's own
// limit per request passes). TR_OK and *reply as tr_client_status (the
// jobs as they are then), *timed_out (may be NULL) true when the time
// passed first. Blocks.
tr_err tr_client_wait(tr_client *c, const uint64_t *ids, size_t n, uint64_t timeout_ms,
                      tr_msg **reply, bool *timed_out);

// tr_client_reply_jobs returns the JobList of a reply, or NULL.
const Troupe__V1__JobList *tr_client_reply_jobs(const tr_msg *reply);

#endif
