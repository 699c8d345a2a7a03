// troupe/plugin.h: the ABI of trouped's plugins, shared objects that add
// task kinds a job may name (JobSpec.plugin: a kind and its argument
// bytes). trouped loads every `*.so` of its --plugin-dir at start-up,
// before any job runs, and calls each one's TR_PLUGIN_REGISTER function
// once, on its main thread; the function registers the plugin's kinds
// through the host table it is given. A plugin links libtroupe (the
// shared library: trouped's own copy of the runtime is the one its tasks
// run on) and includes this header and <troupe/troupe.h>.
//
// What a plugin is trusted with: it runs inside trouped, with trouped's
// privileges, on trouped's workers, and is never unloaded (no dlclose: its
// task specs and strings may be static). Its kinds are spawned only by
// jobs, which arrive through the authenticated control protocol; trouped
// never marks them remote (tr_kind_set_remote), and refuses a plugin that
// does.
//
// A minimal plugin:
//
//     #include <troupe/plugin.h>
//
//     TR_PLUGIN_ABI_DEFINE();
//
//     TR_PLUGIN_EXPORT tr_err
//     TR_PLUGIN_REGISTER(const tr_plugin_host *host)
//     {
//         if (!tr_plugin_abi_ok(host)) {
//             return TR_ENOTSUP;
//         }
//         return host->kind_register(host, "acme.hello", &hello_spec, hello_init,
//                                    hello_encode);
//     }
#ifndef TROUPE_PLUGIN_H
#define TROUPE_PLUGIN_H

#include <stdbool.h>
#include <stdint.h>

#include <troupe/common.h>
#include <troupe/err.h>
#include <troupe/executor.h>
#include <troupe/task.h>

TR_BEGIN_DECLS

// The ABI's version. The major changes when something here changes
// incompatibly; the minor when a field is added at the end of
// tr_plugin_host (a field past 1.0 exists when host->abi_minor is at
// least the minor that added it, which its comment names).
#define TR_PLUGIN_ABI_MAJOR 1
#define TR_PLUGIN_ABI_MINOR 0
#define TR_PLUGIN_ABI_VERSION (((uint32_t)TR_PLUGIN_ABI_MAJOR << 16) | TR_PLUGIN_ABI_MINOR)

// What a plugin exports: the ABI it was built for, as a uint32_t
// (TR_PLUGIN_ABI_VERSION: major << 16 | minor), and its register function.
// The host reads the first before it calls anything: a plugin built for
// another major, or for a minor newer than the host's, is refused without
// running any of its code (beyond the loader's constructors).
#define TR_PLUGIN_ABI troupe_plugin_abi
#define TR_PLUGIN_REGISTER troupe_plugin_register
#define TR_PLUGIN__STR2(x) #x
#define TR_PLUGIN__STR(x) TR_PLUGIN__STR2(x)
#define TR_PLUGIN_ABI_SYMBOL TR_PLUGIN__STR(TR_PLUGIN_ABI)
#define TR_PLUGIN_REGISTER_SYMBOL TR_PLUGIN__STR(TR_PLUGIN_REGISTER)

// TR_PLUGIN_EXPORT makes a symbol visible from the plugin (which may be
// built with -fvisibility=hidden).
#define TR_PLUGIN_EXPORT __attribute__((visibility("default")))

// TR_PLUGIN_ABI_DEFINE() defines the ABI symbol: once, in one file of the
// plugin, at file scope.
#define TR_PLUGIN_ABI_DEFINE() TR_PLUGIN_EXPORT const uint32_t TR_PLUGIN_ABI = TR_PLUGIN_ABI_VERSION

typedef struct tr_plugin_host tr_plugin_host;

// What the host hands the register function. The host owns it; it is
// valid during that call only (do not keep the pointer, nor call its
// functions later). Fields are only ever added at the end (see the
// minor version above); a plugin reads no field its host's minor lacks.
struct tr_plugin_host {
    uint32_t abi_major; // the host's TR_PLUGIN_ABI_MAJOR
    uint32_t abi_minor; // the host's TR_PLUGIN_ABI_MINOR
    // The runtime the plugin's tasks run on (trouped's). For what a
    // register function may need of it; a task reaches its own with
    // tr_cx_rt.
    tr_rt *rt;
    // The plugin's file as the host found it (for messages).
    const char *path;
    // kind_register registers a kind of task under name, as
    // tr_kind_register does (troupe/executor.h: name, spec, init), and
    // records it as this plugin's, so that jobs may name it. Kinds of a
    // plugin must register through here: a kind registered with
    // tr_kind_register directly is not a plugin kind, and no job can run
    // it. encode_result is required: it turns the task's result into the
    // job's output (below). init_from_args may be NULL (the kind takes no
    // arguments: a job that gives some fails at its start with
    // TR_EINVAL). TR_OK; TR_EINVAL for a bad name or spec or a NULL
    // encoder; TR_EPERM for a name trouped reserves (exec, shell, sleep,
    // noop: its own tasks); TR_EEXIST for a name taken (by this plugin, an
    // earlier one, or the runtime). On an error the host has recorded why,
    // and names it with the plugin's file. Only during the register call,
    // on its thread.
    tr_err (*kind_register)(const tr_plugin_host *host, const char *name, const tr_task_spec *spec,
                            tr_kind_init_fn init_from_args, tr_kind_encode_fn encode_result);
    void *host_private; // the host's own
};

// The register function (TR_PLUGIN_REGISTER, exported). It registers the
// plugin's kinds with host->kind_register and returns TR_OK, or an error,
// which stops trouped's start-up with a message naming the plugin's file
// (kinds it registered before failing stay registered: the runtime never
// unregisters one, and trouped does not start). Called once per runtime,
// on the host's main thread, before any task of the plugin runs; it must
// not block for long, nor start tasks or threads that outlive it in ways
// the host cannot see.
typedef tr_err (*tr_plugin_register_fn)(const tr_plugin_host *host);

TR_PLUGIN_EXPORT extern const uint32_t TR_PLUGIN_ABI;
TR_PLUGIN_EXPORT tr_err TR_PLUGIN_REGISTER(const tr_plugin_host *host);

// tr_plugin_abi_ok says whether host speaks the ABI this plugin was built
// for: the same major, and at least its minor. The host checks the same
// from TR_PLUGIN_ABI before calling the register function; a plugin may
// check again (a host of another major would not get this far).
static inline bool
tr_plugin_abi_ok(const tr_plugin_host *host)
{
    uint32_t minor = TR_PLUGIN_ABI_MINOR; // a variable: minor 0 would make -Wtype-limits warn
    return host != NULL && host->abi_major == TR_PLUGIN_ABI_MAJOR && host->abi_minor >= minor;
}

// What a plugin kind's task does, and how its job ends.
//
// - init_from_args gets the job's PluginTask.args (len bytes; args is
//   valid during the call only: copy what the task keeps). It runs on a
//   worker of trouped (the job runner's) when the job starts; it must not
//   block. An error fails the job (the text names the kind and the
//   error).
// - The poll function runs on trouped's workers and must never block
//   them: wait on wakers, timers (troupe/time.h) and IO (troupe/io.h),
//   and move blocking work to the blocking pool (troupe/blocking.h). The
//   task's result is whatever it sets (tr_cx_set_result*).
// - A cancel (the job cancelled, its timeout, a shutdown's deadline) is
//   the runtime's: the task's drop function runs instead of its next
//   poll, and releases what the state holds (a timer's
//   tr_timer_abandon, join handles, buffers).
// - encode_result runs on a worker once the task has completed (never for
//   a cancelled one). TR_OK: *data (malloc'd, or NULL) and *len are the
//   job's result, which trouped appends to the job's stdout (its output
//   file, what Logs reads; past the job's output cap the rest is dropped
//   and the job marked truncated) and the job SUCCEEDED. Any other return
//   fails the job (FAILED, retried if it has attempts left): *data, when
//   not NULL, then holds *len bytes of text saying why, which become the
//   job's error text (else the error's tr_strerror). trouped frees *data
//   in both cases. The runtime's own TaskResult path (tr_exec_send) reads
//   the same encoder: it sends the error code and frees the text unread.
// - A job's timeout_ms bounds the task (TIMED_OUT); its exec-only fields
//   (env, cwd, stdin, rlimits) do not apply.

TR_END_DECLS

#endif
