// troupe/executor.h: the executor as an actor, and the task kinds it starts
// by name.
//
// Any thread (a task, an actor, a thread serving a socket) sends the
// executor a command, a protobuf-c ExecutorCommand (Spawn, Cancel,
// Shutdown, StatusRequest: proto/troupe/v1/executor.proto), with
// tr_exec_send. The executor answers on the sender's mailbox with
// ExecutorReply messages, each carrying the command's correlation id. A
// command that came from another process is unpacked
// (troupe__v1__executor_command__unpack) and sent as it is; a reply is
// packed (troupe__v1__executor_reply__pack) to go back.
//
// A Spawn from another process cannot carry a task's poll function: it
// names a kind, registered with tr_kind_register, and carries the kind's
// arguments as bytes. A kind with a result encoder can send its result back
// as bytes too (Spawn.want_result); a kind without one can only be spawned
// locally (tr_kind_spawn).
#ifndef TROUPE_EXECUTOR_H
#define TROUPE_EXECUTOR_H

#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/mailbox.h>
#include <troupe/task.h>
#include <troupe/v1/executor.pb-c.h>

TR_BEGIN_DECLS

// ---------------------------------------------------------------------------
// Task kinds.

// tr_kind_init_fn fills in the zeroed state of a new task of the kind from
// len bytes of packed arguments (args is never NULL, len may be 0): TR_OK,
// or an error (TR_EINVAL for arguments it cannot read) that refuses the
// spawn. On an error the task is discarded without its drop function, so
// init releases whatever it set up before failing. It runs on a worker of
// the runtime (a Spawn command) or on the caller of tr_kind_spawn; it must
// not block.
typedef tr_err (*tr_kind_init_fn)(void *state, const void *args, size_t len);

// tr_kind_encode_fn writes the result of a task that completed (out->err is
// TR_OK; out is the joiner's outcome, which the runtime finalises after the
// call) as bytes: *data from malloc (the runtime frees it) and *len, or
// *data NULL and *len 0 for no bytes. Any other return is sent back as the
// TaskResult's error. Runs on a worker; must not block.
typedef tr_err (*tr_kind_encode_fn)(const tr_outcome *out, void **data, size_t *len);

// A kind's name: 1 to TR_KIND_NAME_MAX bytes of [A-Za-z0-9_.:-].
#define TR_KIND_NAME_MAX 64

// tr_kind_register registers a kind of task under name in rt: spec (static
// storage, as tr_task_new wants it) is what a task of the kind runs;
// init_from_args (NULL: the kind takes no arguments, and a spawn carrying
// any is refused with TR_EINVAL) fills in its state; encode_result (NULL:
// the kind's result stays in the process, and a Spawn command for it is
// refused) turns its result into bytes. name is copied. TR_EINVAL for a bad
// name or spec, TR_EEXIST when rt has a kind of that name. Kinds are never
// unregistered: they last as long as the runtime. Any thread, at any time.
TR_API tr_err tr_kind_register(tr_rt *rt, const char *name, const tr_task_spec *spec,
                               tr_kind_init_fn init_from_args, tr_kind_encode_fn encode_result);

// tr_kind_set_remote marks the kind called name as one that another node
// may spawn (remote true) or not (false, the default). The executor itself
// answers Spawn commands for any kind with an encoder, whoever sends them
// inside the process; a node (troupe/node.h, libtroupe-actors) refuses a
// Spawn that arrives over the network for a kind not marked here, with
// TR_EPERM. Never mark a kind that runs commands or touches files on a
// port others can reach. TR_OK, TR_ENOTFOUND (no such kind), TR_EINVAL (a
// kind without a result encoder). Any thread.
TR_API tr_err tr_kind_set_remote(tr_rt *rt, const char *name, bool remote);

// tr_kind_is_remote reports whether the kind called name may be spawned
// from another node.
TR_API bool tr_kind_is_remote(tr_rt *rt, const char *name);

// tr_kind_spawn starts a task of the kind called name with len bytes of
// arguments (args may be NULL when len is 0), as tr_spawn does: TR_OK and
// *join (may be NULL: detached), or TR_ENOTFOUND for a name rt has no kind
// for, the error of the kind's init_from_args, or tr_spawn's errors. Any
// thread; kinds without an encoder too.
TR_API tr_err tr_kind_spawn(tr_rt *rt, const char *name, const void *args, size_t len,
                            tr_join *join);

// ---------------------------------------------------------------------------
// Commands and replies.

// The largest TaskSpec.args a Spawn may carry (bigger: TR_ETOOBIG).
#define TR_EXEC_ARGS_MAX ((size_t)1 << 24)

// tr_exec_send hands cmd to rt's executor. The command is copied (the
// caller keeps cmd, and may free it when this returns); commands from one
// thread are carried out in the order sent. When reply_to is not NULL the
// executor pushes its replies there (tr_exec_reply messages, below): one
// per command, plus a TaskResult for a Spawn with want_result; reply_to must
// stay valid until the last of them has arrived. When reply_to is NULL
// nothing is sent back.
//
// Returns TR_OK when the command was queued. These are refused at once,
// nothing is queued and nothing will be sent back (tr_error_detail says
// why): TR_EINVAL for a NULL rt or cmd, a message that is not an
// ExecutorCommand, no command (or one this version does not know), a
// Spawn without a TaskSpec or by task_key (slot keys are the runtime's
// own), a Shutdown with an unknown mode, want_result without reply_to;
// TR_ETOOBIG for a TaskSpec's args over TR_EXEC_ARGS_MAX or its kind over
// TR_KIND_NAME_MAX bytes; TR_ESHUTDOWN for a Shutdown when a shutdown was
// already requested (a Shutdown is carried out as tr_rt_shutdown: from the
// moment it is sent the runtime accepts no task).
//
// Everything else is answered on reply_to: an unknown kind (TR_ENOTFOUND),
// a kind without an encoder (TR_ENOTSUP), arguments the kind refuses (its
// init's error), a Spawn during shutdown (TR_ESHUTDOWN) or past
// max_tasks (TR_EEXHAUSTED), a Cancel for a task that is gone
// (TR_ENOTFOUND) or finished (TR_EFINISHED): each as an Error reply. Workers
// carry commands out between polls, so the executor answers as long as one
// of them runs: with one worker, only while a thread is inside
// tr_rt_block_on; commands still queued when the runtime is freed are
// answered then (a Spawn with TR_ESHUTDOWN). Any thread; never blocks (a
// message allocation and one CAS).
TR_API tr_err tr_exec_send(tr_rt *rt, const Troupe__V1__ExecutorCommand *cmd, tr_mailbox *reply_to);

// A reply from the executor: a message whose m_type is
// &troupe__v1__executor_reply__descriptor. reply points into the same
// block; the whole is freed with tr_msg_free (as every message is). Strings
// and bytes in it are valid until then.
typedef struct tr_exec_reply {
    tr_msg hdr;
    Troupe__V1__ExecutorReply *reply;
} tr_exec_reply;

// tr_exec_reply_of returns m as an executor reply, or NULL when m is some
// other message.
static inline tr_exec_reply *
tr_exec_reply_of(tr_msg *m)
{
    return (m != NULL && m->m_type == &troupe__v1__executor_reply__descriptor) ? (tr_exec_reply *)m
                                                                               : NULL;
}

TR_END_DECLS

#endif
