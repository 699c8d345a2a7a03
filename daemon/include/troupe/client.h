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

TR_BEGIN_DECLS

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
//
// URLs: ipc://PATH (the local socket; no token needed), tls+tcp://HOST:PORT
// (a remote daemon: its certificate must verify against the CA file
// $TROUPE_TLS_CA, under the name $TROUPE_TLS_SERVER_NAME or else HOST;
// without TROUPE_TLS_CA the dial fails with TR_EINVAL; set the daemon's
// token with tr_client_set_token), tcp:// (a daemon started with
// --insecure-tcp on loopback: tests only).
TR_API tr_err tr_client_connect(const char *url, tr_client **out);

// tr_client_close closes the socket and frees c. Not while a call runs.
TR_API void tr_client_close(tr_client *c);

// tr_client_set_timeout sets how long a call waits for its reply (ms; 0:
// TR_CLIENT_TIMEOUT_MS). A wait adds its own wait time to it.
TR_API void tr_client_set_timeout(tr_client *c, uint32_t ms);

// tr_client_error returns the detail of the calling thread's last failed
// call ("" when none). Valid until the thread's next call.
TR_API const char *tr_client_error(void);

// tr_client_call sends req, a ControlRequest message (tr_msg_new), with
// its version set to 1, and waits timeout_ms (0: the client's timeout) for
// the reply. Takes ownership of req in every case. TR_OK and *reply (a
// ControlReply message; the caller frees it with tr_msg_free), or an
// error: the daemon's ControlError code (no *reply then), TR_ETOOBIG (the
// request is over TR_CLIENT_MAX_REQUEST: not sent), TR_ETIMEDOUT,
// transport errors. Blocks. Any thread.
TR_API tr_err tr_client_call(tr_client *c, tr_msg *req, uint32_t timeout_ms, tr_msg **reply);

// tr_client_ping asks the daemon for its version: TR_OK and the version
// in ver (verlen bytes, may be 0). Blocks.
TR_API tr_err tr_client_ping(tr_client *c, char *ver, size_t verlen);

// tr_client_submit submits batch (only read; job_count is set from n_jobs
// on a copy when it is 0) under a fresh request id: TR_OK with the jobs'
// ids *first_id .. *first_id + *count - 1, once the daemon has committed
// them. Blocks.
TR_API tr_err tr_client_submit(tr_client *c, const Troupe__V1__SubmitBatch *batch,
                               uint64_t *first_id, uint32_t *count);

// tr_client_status reads jobs ids[0..n): TR_OK and *reply, a ControlReply
// whose jobs (a JobList) hold one JobInfo per id in order; the caller
// frees it. TR_ENOTFOUND names the unknown id in tr_client_error. Blocks.
TR_API tr_err tr_client_status(tr_client *c, const uint64_t *ids, size_t n, tr_msg **reply);

// tr_client_wait waits until every job of ids is final, or timeout_ms
// passes (0: no limit; the client asks again each time the daemon's own
// limit per request passes). TR_OK and *reply as tr_client_status (the
// jobs as they are then), *timed_out (may be NULL) true when the time
// passed first. Blocks.
TR_API tr_err tr_client_wait(tr_client *c, const uint64_t *ids, size_t n, uint64_t timeout_ms,
                             tr_msg **reply, bool *timed_out);

// tr_client_reply_jobs returns the JobList of a reply, or NULL.
TR_API const Troupe__V1__JobList *tr_client_reply_jobs(const tr_msg *reply);

// tr_client_connect_now is tr_client_connect with a dial that waits: when
// nothing listens at url it fails at once (TR_ECONNREFUSED, TR_ENOENT and
// the like, detail in tr_client_error) instead of at the first call's
// timeout. Once connected nng redials in the background as before. For
// programs that should say "the daemon is not running" at once (the CLI).
// Blocks for the dial. Any thread.
TR_API tr_err tr_client_connect_now(const char *url, tr_client **out);

// tr_client_set_token sets the bearer token put into every request's
// ControlRequest.token (tls+tcp); NULL or "" clears it. The string is
// copied. Call it before calls run (not while one runs).
TR_API void tr_client_set_token(tr_client *c, const char *token);

// tr_client_pong pings the daemon: TR_OK and *reply, a ControlReply whose
// pong (tr_client_reply_pong) holds the version, the protocol, the uptime
// and events_url; the caller frees it. Blocks.
TR_API tr_err tr_client_pong(tr_client *c, tr_msg **reply);

// tr_client_reply_pong returns the Pong of a reply, or NULL.
TR_API const Troupe__V1__Pong *tr_client_reply_pong(const tr_msg *reply);

// tr_client_cancel cancels jobs ids[0..n): TR_OK once the daemon has acted
// (a queued job is cancelled then; a running one has had SIGTERM and is
// cancelled when its leader exits: wait for it with tr_client_wait). Jobs
// already final stay as they are, so a re-sent Cancel is harmless.
// TR_ENOTFOUND names an unknown id in tr_client_error (then nothing was
// cancelled). Blocks.
TR_API tr_err tr_client_cancel(tr_client *c, const uint64_t *ids, size_t n);

// tr_client_list lists jobs by the filters of q (only read; NULL: every
// job, the daemon's default page): TR_OK and *reply, a ControlReply whose
// JobList (tr_client_reply_jobs) holds one page in id order and its
// next_cursor (0: the last page; else pass it as q->after_id for the
// next). The caller frees *reply. Blocks.
TR_API tr_err tr_client_list(tr_client *c, const Troupe__V1__ListJobs *q, tr_msg **reply);

// tr_client_logs reads job id's output: stream 1 (stdout) or 2 (stderr)
// from byte offset, at most max_bytes (0: the daemon's 64 KiB; it serves
// at most 1 MiB). TR_OK and *reply, a ControlReply whose LogChunk
// (tr_client_reply_log) holds the bytes from chunk->offset, eof when the
// job is final and nothing follows, truncated when the job's output passed
// its cap. With follow, when nothing is there yet and the job is not
// final, the daemon holds the request until there is, or up to its limit
// per request (30 s): then the reply's timed_out is true with no data (ask
// again). The caller frees *reply. TR_EINVAL for a bad stream,
// TR_ENOTFOUND for an unknown id. Blocks.
TR_API tr_err tr_client_logs(tr_client *c, uint64_t id, uint32_t stream, uint64_t offset,
                             uint32_t max_bytes, bool follow, tr_msg **reply);

// tr_client_reply_log returns the LogChunk of a reply, or NULL.
TR_API const Troupe__V1__LogChunk *tr_client_reply_log(const tr_msg *reply);

// tr_client_group pauses (pause true) or resumes a group ("": the default
// group): while paused no new job of it starts; running ones go on. Any
// name is accepted. TR_OK once the daemon has applied it. Blocks.
TR_API tr_err tr_client_group(tr_client *c, const char *group, bool pause);

// tr_client_shutdown asks the daemon to stop: graceful (no new job starts,
// running ones finish, and after deadline_ms, when not 0, they are
// killed), or immediate (running jobs killed now). Queued jobs stay for
// the next start. TR_OK when the daemon has acknowledged it; it stops
// after that. Blocks.
TR_API tr_err tr_client_shutdown(tr_client *c, bool immediate, uint64_t deadline_ms);

// Streams for tr_client_follow's stream_mask.
#define TR_CLIENT_STDOUT 1u
#define TR_CLIENT_STDERR 2u

// tr_client_output_fn receives data[0..len) of job output, stream 1 or 2,
// from byte offset of that stream. Called on the thread of the follow.
typedef void (*tr_client_output_fn)(void *arg, uint32_t stream, uint64_t offset,
                                    const uint8_t *data, size_t len);

// tr_client_follow streams job id's output (the streams of stream_mask:
// TR_CLIENT_STDOUT, TR_CLIENT_STDERR or both) to on_output, each stream's
// bytes in order and each byte once, from the start of the output until
// the job is final and all of it was delivered. TR_OK and *final_reply, a
// ControlReply whose JobList (tr_client_reply_jobs) holds the job's final
// JobInfo (the caller frees it); on an error the bytes delivered so far
// stay delivered and *final_reply is NULL. When the daemon publishes
// events (Pong.events_url), it subscribes to the job's events before it
// reads what exists, applies output events at the next offset, re-reads
// gaps (events the PUB socket dropped) with Logs, and ends at a final
// state event or at the end of a Wait it keeps outstanding meanwhile (the
// safety net for a dropped final event), then reads to eof. Without
// events it long-polls Logs with follow. (The subscription works once the
// daemon's PUB has taken the connection, which may be a moment after the
// dial returns; the catch-up reads, the Wait and the final reads to eof
// cover what is published before.) Never polls on a timer: it blocks
// on the daemon's events and replies. If the daemon cuts a stream (output
// over its cap), the bytes past the cut are never delivered. Blocks until
// the job is final. Not reentrant from on_output.
TR_API tr_err tr_client_follow(tr_client *c, uint64_t id, unsigned stream_mask,
                               tr_client_output_fn on_output, void *arg, tr_msg **final_reply);

// tr_client_event_fn receives one JobEvent (only read; valid during the
// call). Called on the thread of the watch; it may make other calls on
// the same client (each call has a context of its own).
typedef void (*tr_client_event_fn)(void *arg, const Troupe__V1__JobEvent *ev);

// tr_client_watch delivers the daemon's events about jobs ids[0..n) to
// on_event (state changes and output, as published: the PUB socket may
// drop some, so a job may end without its event) until every one of the
// jobs is final, which Waits kept outstanding meanwhile decide (in slices
// of the daemon's 1000 ids per request). TR_OK then: read the final
// states with tr_client_status. TR_ENOTSUP, with nothing delivered, when
// the daemon publishes no events (Pong.events_url ""): use tr_client_wait.
// Blocks until every job is final; never polls on a timer.
TR_API tr_err tr_client_watch(tr_client *c, const uint64_t *ids, size_t n,
                              tr_client_event_fn on_event, void *arg);

TR_END_DECLS

#endif
