// hello: a tour of the task API. A producer sends numbers into a bounded
// channel of capacity 4 (so it waits whenever the consumer falls behind), a
// consumer sums them, and a sleeper that never wakes is cancelled. Shows
// TR_BEGIN / TR_AWAIT / TR_YIELD / TR_END, join handles, results, cancel and
// drop. Build: part of the normal build; run ./build/runtime/examples/hello.
#include <stdio.h>

#include <troupe/troupe.h>

// The producer: every local that lives across an await is a field.
typedef struct producer {
    int tr_pc;
    tr_chan *ch;
    uint64_t i, n;
    tr_chan_send_op op; // a send waiting for room keeps its place here
    tr_err err;
} producer;

static tr_poll
producer_poll(void *arg, tr_cx *cx)
{
    producer *st = arg;
    TR_BEGIN(st);
    for (st->i = 1; st->i <= st->n; st->i++) {
        TR_AWAIT(st, tr_chan_send(st->ch, cx, &st->op, &st->i, &st->err));
        if (st->err != TR_OK) {
            break; // the receiver went away
        }
    }
    TR_END(st);
}

static void
producer_drop(void *arg)
{
    producer *st = arg;
    // Runs once, however the task ends: after it finished, or if it was
    // cancelled while a send was pending.
    tr_chan_send_abandon(st->ch, &st->op);
    tr_chan_sender_release(st->ch);
}

static const tr_task_spec producer_spec = {
    .name = "producer", .poll = producer_poll, .drop = producer_drop, .size = sizeof(producer)};

// A task that waits forever: it never arranges to be woken.
typedef struct sleeper {
    int tr_pc;
} sleeper;

static tr_poll
sleeper_poll(void *arg, tr_cx *cx)
{
    (void)arg;
    (void)cx;
    return TR_PENDING;
}

static void
sleeper_drop(void *arg)
{
    (void)arg;
    printf("sleeper: dropped (cancelled)\n");
}

static const tr_task_spec sleeper_spec = {
    .name = "sleeper", .poll = sleeper_poll, .drop = sleeper_drop, .size = sizeof(sleeper)};

// The root: starts the others, consumes, then cancels the sleeper.
typedef struct root {
    int tr_pc;
    tr_chan *ch;
    tr_join prod, sleep;
    uint64_t item, sum, count;
    tr_err err;
} root;

static tr_poll
root_poll(void *arg, tr_cx *cx)
{
    root *st = arg;
    tr_outcome out; // read only in the poll that completes the join
    TR_BEGIN(st);
    if (tr_chan_new(sizeof(uint64_t), 4, &st->ch) != TR_OK) {
        TR_RETURN(st);
    }
    // tr_spawn copies the new task's state from the literal and starts it.
    // The producer takes over the channel's sender end; the sleeper's
    // state stays zeroed (no arg).
    if (tr_spawn(tr_cx_rt(cx), &producer_spec, NULL, &(producer){.ch = st->ch, .n = 1000},
                 &st->prod) != TR_OK ||
        tr_spawn(tr_cx_rt(cx), &sleeper_spec, NULL, NULL, &st->sleep) != TR_OK) {
        TR_RETURN(st); // (a real program would also clean up)
    }

    for (;;) {
        TR_AWAIT(st, tr_chan_recv(st->ch, cx, &st->item, &st->err));
        if (st->err == TR_ECLOSED) {
            break; // every sender is gone and the buffer is empty
        }
        st->sum += st->item;
        if (++st->count % 250 == 0) {
            TR_YIELD(st, cx); // let the others run now and then
        }
    }
    tr_chan_receiver_release(st->ch);
    TR_AWAIT(st, tr_join_poll(&st->prod, cx, &out));
    printf("consumer: received %llu items, sum %llu\n", (unsigned long long)st->count,
           (unsigned long long)st->sum);

    tr_task_abort(&st->sleep);
    TR_AWAIT(st, tr_join_poll(&st->sleep, cx, &out));
    printf("sleeper: join says %s\n", tr_strerror(out.err));
    tr_cx_set_result_u64(cx, st->sum);
    TR_END(st);
}

static const tr_task_spec root_spec = {.name = "root", .poll = root_poll, .size = sizeof(root)};

int
main(void)
{
    tr_rt *rt;
    tr_err e = tr_rt_new(NULL, &rt);
    if (e != TR_OK) {
        // tr_error_detail names the setting at fault (TROUPE_WORKERS=...).
        fprintf(stderr, "hello: %s: %s\n", tr_strerror(e), tr_error_detail());
        return 1;
    }
    // tr_rt_run makes the root (zeroed: no arg) and runs it on this thread.
    tr_outcome out = {0};
    e = tr_rt_run(rt, &root_spec, NULL, NULL, &out);
    printf("root: %s, result %llu\n", tr_strerror(e), (unsigned long long)out.value.u64);
    tr_rt_free(rt);
    return e == TR_OK && out.value.u64 == 500500 ? 0 : 1;
}
