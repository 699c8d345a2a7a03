// demo_plugin.c: the test plugin of trouped (troupe/plugin.h), built as a
// MODULE library. Its kinds:
//
// - demo.echo: its result is its arguments (the job's stdout is them).
// - demo.fail: fails; its arguments are the error's text (none: the
//   host's words for TR_EIO).
// - demo.wait: no arguments: pending until cancelled (nothing wakes it
//   but the cancel, which wakes the task it cancels); "N": waits N ms on a
//   runtime timer, then its result is "waited N ms". Its drop abandons the
//   timer, as a cancelled task's must.
//
// Built again with one of these defined, as the loader's bad cases
// (tests/daemon/CMakeLists.txt): DEMO_BAD_ABI (built for ABI 99.0),
// DEMO_NO_ABI (no ABI symbol: not a troupe plugin), DEMO_NO_REGISTER (no
// register function), DEMO_FAIL_REGISTER (it returns TR_EIO),
// DEMO_RESERVED (registers "exec"), DEMO_REMOTE (marks its kind remote),
// DEMO_DUP (registers demo.echo only, which the demo plugin has).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <troupe/plugin.h>
#include <troupe/time.h>

// The bad builds leave some of these unused.
#define DEMO_UNUSED __attribute__((unused))

// A result that owns its bytes: the task's boxed result (tr_outcome's
// value.ptr, with box_free as its dtor), which the encoder copies out.
typedef struct box {
    size_t b_len;
    char b_data[];
} box;

static box *
box_new(const void *data, size_t len)
{
    box *b = malloc(sizeof *b + len + 1);
    if (b == NULL) {
        abort();
    }
    b->b_len = len;
    if (len > 0) {
        memcpy(b->b_data, data, len);
    }
    b->b_data[len] = '\0';
    return b;
}

static void
box_free(void *p)
{
    free(p);
}

// copy_out hands the box's bytes to the host (malloc'd, the host frees
// them), or NULL for none.
static void
copy_out(const box *b, void **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    if (b != NULL && b->b_len > 0) {
        *data = malloc(b->b_len);
        if (*data == NULL) {
            abort();
        }
        memcpy(*data, b->b_data, b->b_len);
        *len = b->b_len;
    }
}

// ---------------------------------------------------------------------------
// demo.echo and demo.fail: the state holds the arguments until the one
// poll moves them into the result.

typedef struct args_task {
    box *a_args; // owned until the poll moves it into the result
} args_task;

DEMO_UNUSED static tr_err
args_init(void *state, const void *args, size_t len)
{
    ((args_task *)state)->a_args = box_new(args, len);
    return TR_OK;
}

static tr_poll
args_poll(void *state, tr_cx *cx)
{
    args_task *t = state;
    tr_cx_set_result_ptr(cx, t->a_args, box_free);
    t->a_args = NULL;
    return TR_READY;
}

static void
args_drop(void *state)
{
    free(((args_task *)state)->a_args); // cancelled before its poll
}

DEMO_UNUSED static const tr_task_spec args_spec = {
    .name = "demo.args",
    .poll = args_poll,
    .drop = args_drop,
    .size = sizeof(args_task),
};

DEMO_UNUSED static tr_err
echo_encode(const tr_outcome *out, void **data, size_t *len)
{
    copy_out(out->value.ptr, data, len);
    return TR_OK;
}

DEMO_UNUSED static tr_err
fail_encode(const tr_outcome *out, void **data, size_t *len)
{
    copy_out(out->value.ptr, data, len); // the error's text (troupe/plugin.h)
    return TR_EIO;
}

// ---------------------------------------------------------------------------
// demo.wait.

typedef struct wait_task {
    bool w_forever;
    uint64_t w_ms;
    tr_timer w_timer;
} wait_task;

DEMO_UNUSED static tr_err
wait_init(void *state, const void *args, size_t len)
{
    wait_task *t = state;
    t->w_forever = len == 0;
    for (size_t i = 0; i < len; i++) {
        char c = ((const char *)args)[i];
        if (c < '0' || c > '9' || t->w_ms > 86400000u) {
            return TR_EINVAL; // not a number of ms (at most a day)
        }
        t->w_ms = t->w_ms * 10 + (uint64_t)(c - '0');
    }
    return TR_OK;
}

static tr_poll
wait_poll(void *state, tr_cx *cx)
{
    wait_task *t = state;
    if (t->w_forever) {
        return TR_PENDING; // no waker kept: only a cancel wakes it
    }
    if (tr_sleep(&t->w_timer, cx, t->w_ms * TR_NS_PER_MS) == TR_PENDING) {
        return TR_PENDING;
    }
    char text[64];
    int n = snprintf(text, sizeof text, "waited %llu ms", (unsigned long long)t->w_ms);
    tr_cx_set_result_ptr(cx, box_new(text, (size_t)n), box_free);
    return TR_READY;
}

static void
wait_drop(void *state)
{
    tr_timer_abandon(&((wait_task *)state)->w_timer);
}

DEMO_UNUSED static const tr_task_spec wait_spec = {
    .name = "demo.wait",
    .poll = wait_poll,
    .drop = wait_drop,
    .size = sizeof(wait_task),
};

// ---------------------------------------------------------------------------
// The plugin's exports.

#if defined(DEMO_BAD_ABI)
TR_PLUGIN_EXPORT const uint32_t TR_PLUGIN_ABI = (uint32_t)99 << 16;
#elif !defined(DEMO_NO_ABI)
TR_PLUGIN_ABI_DEFINE();
#endif

#ifndef DEMO_NO_REGISTER
TR_PLUGIN_EXPORT tr_err
TR_PLUGIN_REGISTER(const tr_plugin_host *host)
{
    if (!tr_plugin_abi_ok(host)) {
        return TR_ENOTSUP;
    }
#if defined(DEMO_FAIL_REGISTER)
    return TR_EIO;
#elif defined(DEMO_RESERVED)
    return host->kind_register(host, "exec", &args_spec, args_init, echo_encode);
#elif defined(DEMO_DUP)
    return host->kind_register(host, "demo.echo", &args_spec, args_init, echo_encode);
#elif defined(DEMO_REMOTE)
    tr_err rv = host->kind_register(host, "demo.remote", &args_spec, args_init, echo_encode);
    return rv == TR_OK ? tr_kind_set_remote(host->rt, "demo.remote", true) : rv;
#else
    tr_err rv;
    if ((rv = host->kind_register(host, "demo.echo", &args_spec, args_init, echo_encode)) !=
            TR_OK ||
        (rv = host->kind_register(host, "demo.fail", &args_spec, args_init, fail_encode)) !=
            TR_OK ||
        (rv = host->kind_register(host, "demo.wait", &wait_spec, wait_init, echo_encode)) !=
            TR_OK) {
        return rv;
    }
    return TR_OK;
#endif
}
#endif
