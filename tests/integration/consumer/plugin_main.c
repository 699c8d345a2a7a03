// plugin_main.c: a trouped plugin outside the troupe tree, built against the
// installed <troupe/plugin.h> (pkg-config troupe) as a shared object: the
// header's own example, to check that the installed ABI header compiles on
// its own and that a plugin links. install_consume.sh builds it and loads it
// into the installed trouped (--plugin-dir), then runs a job of its kind.
#include <stdlib.h>
#include <string.h>

#include <troupe/plugin.h>
#include <troupe/troupe.h>

TR_PLUGIN_ABI_DEFINE();

typedef struct hello {
    int unused;
} hello;

static tr_poll
hello_poll(void *state, tr_cx *cx)
{
    (void)state;
    (void)cx;
    return TR_READY;
}

static const tr_task_spec hello_spec = {"consumer.hello", hello_poll, NULL, sizeof(hello)};

static tr_err
hello_encode(const tr_outcome *out, void **data, size_t *len)
{
    (void)out;
    static const char text[] = "hello from a plugin\n";
    *data = malloc(sizeof text - 1);
    if (*data == NULL) {
        return TR_ENOMEM;
    }
    memcpy(*data, text, sizeof text - 1);
    *len = sizeof text - 1;
    return TR_OK;
}

TR_PLUGIN_EXPORT tr_err
TR_PLUGIN_REGISTER(const tr_plugin_host *host)
{
    if (!tr_plugin_abi_ok(host)) {
        return TR_ENOTSUP;
    }
    return host->kind_register(host, "consumer.hello", &hello_spec, NULL, hello_encode);
}
