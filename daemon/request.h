// request.h: the daemon's control-request decoder. Bytes off the control
// socket become a checked troupe.v1.ControlRequest here, before trouped
// acts on any of it: the envelope's unpack (depth scan, memory budget),
// the type, the protocol's major version, and each operation's fields
// (a Submit's request id, job count and jobs; id lists; list filters).
// trouped calls it on a worker; the fuzz harness (tests/fuzz/
// fuzz_control.c) calls it on any bytes. It knows nothing of plugins: a
// Submit's plugin kinds are checked through the caller's trd_kind_known_fn
// (trouped's is plugin.h's trd_plugin_kind_known).
#ifndef TRD_REQUEST_H
#define TRD_REQUEST_H

#include <stdbool.h>
#include <stddef.h>

#include <troupe/envelope.h>
#include <troupe/err.h>
#include <troupe/executor.h>
#include <troupe/v1/control.pb-c.h>

// The most job ids one request may name.
#define TRD_IDS_MAX 1000u
// The most bytes one Logs reply carries (and its default).
#define TRD_LOG_CHUNK_MAX (1024u * 1024u)
#define TRD_LOG_CHUNK_DEFAULT (64u * 1024u)
// The longest group name.
#define TRD_NAME_MAX 255u

// trd_kind_known_fn says whether name (a valid kind name: trd_kind_name_ok)
// is a task kind some plugin registered; arg is the caller's. Called on
// the decoder's thread; must not block.
typedef bool (*trd_kind_known_fn)(void *arg, const char *name);

// trd_kind_name_ok says whether s is a valid task kind name: 1 to
// TR_KIND_NAME_MAX bytes of [A-Za-z0-9_.:-] (troupe/executor.h).
bool trd_kind_name_ok(const char *s);

// trd_request_decode decodes len bytes at buf: TR_OK and *out (a message
// whose body is a Troupe__V1__ControlRequest fit to act on; the caller
// frees it with tr_msg_free), or an error with *out NULL and what was
// wrong in why (n bytes, always terminated): tr_msg_unpack's error for
// bytes that are no envelope of a known type within its limits, TR_EINVAL
// for another type or a bad field (a plugin kind that is no kind name
// among them), TR_ENOTSUP for another protocol version, TR_ENOTFOUND for
// a Submit's plugin kind that known(arg, kind) does not know (known NULL:
// none is known), TR_ETOOBIG for too many ids. Any thread.
tr_err trd_request_decode(const void *buf, size_t len, trd_kind_known_fn known, void *arg,
                          tr_msg **out, char *why, size_t n);

#endif
