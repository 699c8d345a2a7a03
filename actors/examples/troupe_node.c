// troupe-node: a node of actors that other processes reach over nng
// (troupe/node.h), and the peer the two-process tests and the remote
// benchmark talk to.
//
//     troupe-node --listen ipc:///tmp/a.sock [--token T] [--dead-after MS]
//
// serves until its standard input closes, with:
//   - "echo": answers every request with the request itself (a
//     troupe.v1.Address body comes back with actor + 1);
//   - "stopper" and "stopper2": stop, with the code in actor, on an Address
//     whose node is 99 (for tests of remote monitors and calls);
//   - the executor (TR_NODE_EXECUTOR), with the kind "troupe.add" marked
//     remote-spawnable (args: two little-endian u64, result: their sum),
//     "troupe.wait" (remote-spawnable, never ends: cancel it) and
//     "troupe.local", which is not; with --serve-shutdown a peer's Shutdown
//     ends the process (exit status 0).
// It prints one line, "NODE <id> <url>", once it listens.
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nng/nng.h>
#include <troupe/actor.h>
#include <troupe/executor.h>
#include <troupe/node.h>
#include <troupe/sync.h>
#include <troupe/troupe.h>

static void
echo_receive(tr_actor *self, void *state, tr_msg *m)
{
    (void)state;
    if (tr_msg_correlation(m) == 0) {
        return; // not a request
    }
    if (tr_msg_is(m, &troupe__v1__address__descriptor)) {
        ((Troupe__V1__Address *)tr_msg_body(m))->actor++;
    }
    tr_actor_keep(self, m);
    tr_actor_reply(self, m, m);
}

static const tr_actor_spec echo_spec = {.name = "echo", .receive = echo_receive};

static void
stopper_receive(tr_actor *self, void *state, tr_msg *m)
{
    (void)state;
    if (tr_msg_is(m, &troupe__v1__address__descriptor)) {
        const Troupe__V1__Address *a = tr_msg_body(m);
        if (a->node == 99) {
            tr_actor_stop(self, (tr_err)a->actor, "asked to");
        }
    }
}

static const tr_actor_spec stopper_spec = {.name = "stopper", .receive = stopper_receive};

// The kind "troupe.add".
typedef struct add_task {
    uint64_t a, b;
} add_task;

static tr_poll
add_poll(void *st, tr_cx *cx)
{
    add_task *t = st;
    tr_cx_set_result_u64(cx, t->a + t->b);
    return TR_READY;
}

static const tr_task_spec add_spec = {"troupe.add", add_poll, NULL, sizeof(add_task)};

// The kind "troupe.wait": a task that never ends by itself (it is never
// woken), for tests of a remote Cancel.
static tr_poll
wait_poll(void *st, tr_cx *cx)
{
    (void)st;
    (void)cx;
    return TR_PENDING;
}

static const tr_task_spec wait_spec = {"troupe.wait", wait_poll, NULL, sizeof(add_task)};

static uint64_t
le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

static tr_err
add_init(void *state, const void *args, size_t len)
{
    if (len != 16) {
        return TR_EINVAL;
    }
    add_task *t = state;
    t->a = le64(args);
    t->b = le64((const uint8_t *)args + 8);
    return TR_OK;
}

static tr_err
add_encode(const tr_outcome *out, void **data, size_t *len)
{
    uint8_t *p = malloc(8);
    if (p == NULL) {
        return TR_ENOMEM;
    }
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(out->value.u64 >> (8 * i));
    }
    *data = p;
    *len = 8;
    return TR_OK;
}

// The root waits until standard input closes.
typedef struct root {
    tr_sem *sem;
    tr_sem_acquire_op op;
    tr_err err;
} root;

static tr_poll
root_poll(void *st, tr_cx *cx)
{
    root *r = st;
    return tr_sem_acquire(r->sem, cx, &r->op, 1, &r->err);
}

static void
root_drop(void *st)
{
    root *r = st;
    tr_sem_acquire_abandon(r->sem, &r->op);
}

static const tr_task_spec root_spec = {"troupe-node", root_poll, root_drop, sizeof(root)};

typedef struct closer {
    tr_node *node;
    tr_sem *sem;
    pthread_mutex_t lock;
    bool stopped; // under lock: the node is stopped (or being stopped)
} closer;

// stdin_main stops the node when standard input closes (while the runtime
// still runs, as tr_node_stop wants), then lets the root finish. When a
// peer's Shutdown ended the runtime first, main stopped the node: the
// thread leaves without touching anything.
static void *
stdin_main(void *arg)
{
    closer *c = arg;
    char buf[256];
    while (read(0, buf, sizeof buf) > 0) {
    }
    pthread_mutex_lock(&c->lock);
    bool mine = !c->stopped;
    c->stopped = true;
    if (mine) {
        tr_node_stop(c->node);
        tr_sem_release(c->sem, 1);
    }
    pthread_mutex_unlock(&c->lock);
    return NULL;
}

static int
usage(void)
{
    fprintf(stderr, "usage: troupe-node --listen URL [--token T] [--dead-after MS] "
                    "[--heartbeat MS] [--recv-max BYTES] [--sendbuf N] [--allow-plain-tcp]\n"
                    "                   [--cert PEM] [--ca PEM] [--serve-shutdown]\n");
    return 2;
}

int
main(int argc, char **argv)
{
    tr_node_opts o = {.serve_executor = true};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--allow-plain-tcp") == 0) {
            o.allow_plain_tcp = true;
            continue;
        }
        if (strcmp(a, "--serve-shutdown") == 0) {
            o.serve_shutdown = true;
            continue;
        }
        if (v == NULL) {
            return usage();
        }
        i++;
        if (strcmp(a, "--listen") == 0) {
            o.listen = v;
        } else if (strcmp(a, "--token") == 0) {
            o.token = v;
        } else if (strcmp(a, "--dead-after") == 0) {
            o.dead_after_ms = (uint32_t)strtoul(v, NULL, 10);
        } else if (strcmp(a, "--heartbeat") == 0) {
            o.heartbeat_ms = (uint32_t)strtoul(v, NULL, 10);
        } else if (strcmp(a, "--recv-max") == 0) {
            o.recv_max = strtoull(v, NULL, 10);
        } else if (strcmp(a, "--sendbuf") == 0) {
            o.sendbuf = (uint32_t)strtoul(v, NULL, 10);
        } else if (strcmp(a, "--cert") == 0) {
            o.tls_cert_key_file = v;
        } else if (strcmp(a, "--ca") == 0) {
            o.tls_ca_file = v;
        } else {
            return usage();
        }
    }
    if (o.listen == NULL) {
        return usage();
    }
    tr_rt_config cfg;
    tr_rt_config_init(&cfg);
    cfg.workers = 2;
    tr_rt *rt;
    tr_err err = tr_rt_new(&cfg, &rt);
    if (err != TR_OK) {
        fprintf(stderr, "troupe-node: tr_rt_new: %s\n", tr_strerror(err));
        return 1;
    }
    tr_kind_register(rt, "troupe.add", &add_spec, add_init, add_encode);
    tr_kind_set_remote(rt, "troupe.add", true);
    tr_kind_register(rt, "troupe.local", &add_spec, add_init, add_encode);
    tr_kind_register(rt, "troupe.wait", &wait_spec, add_init, add_encode);
    tr_kind_set_remote(rt, "troupe.wait", true);
    tr_node *node;
    if ((err = tr_node_start(rt, &o, &node)) != TR_OK) {
        fprintf(stderr, "troupe-node: cannot listen on %s: %s\n", o.listen, tr_strerror(err));
        tr_rt_free(rt);
        return 1;
    }
    tr_actor_opts eo = {.name = "echo"}, so = {.name = "stopper"}, so2 = {.name = "stopper2"};
    tr_actor_spawn(rt, &echo_spec, NULL, &eo, NULL);
    tr_actor_spawn(rt, &stopper_spec, NULL, &so, NULL);
    tr_actor_spawn(rt, &stopper_spec, NULL, &so2, NULL);
    printf("NODE %llu %s\n", (unsigned long long)tr_node_id(node), tr_node_listen_url(node));
    fflush(stdout);
    tr_sem *sem;
    tr_sem_new(0, &sem);
    pthread_t th;
    closer c = {node, sem, PTHREAD_MUTEX_INITIALIZER, false};
    pthread_create(&th, NULL, stdin_main, &c);
    root r = {.sem = sem};
    err = tr_rt_run(rt, &root_spec, NULL, &r, NULL);
    // The runtime ended: standard input closed, or a peer's Shutdown (with
    // --serve-shutdown), which leaves the node for main to stop.
    pthread_mutex_lock(&c.lock);
    bool shut = !c.stopped;
    c.stopped = true;
    if (shut) {
        tr_node_stop(node);
    }
    pthread_mutex_unlock(&c.lock);
    if (shut) {
        pthread_detach(th); // blocked reading stdin: exit ends it
    } else {
        pthread_join(th, NULL);
    }
    tr_rt_free(rt);
    tr_sem_free(sem);
    nng_fini(); // last: every socket is closed, every aio stopped
    return err == TR_OK || shut ? 0 : 1;
}
