#include "sip_event.h"
#include "sip_log.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "apr_tables.h"

struct sip_loop {
    apr_pool_t *pool;
    apr_pollset_t *pollset;
    sip_timer_t **heap;
    apr_size_t nheap, heap_cap;
    apr_array_header_t *doomed;     /* pools to destroy after this batch */
};

apr_status_t sip_loop_create(sip_loop_t **out, apr_pool_t *p)
{
    sip_loop_t *loop = apr_pcalloc(p, sizeof(*loop));
    apr_status_t rv;

    loop->pool = p;
    /* The size only bounds one poll's result batch with epoll, not how many
     * descriptors can be watched. */
    rv = apr_pollset_create(&loop->pollset, 1024, p, 0);
    if (rv != APR_SUCCESS)
        return rv;
    loop->heap_cap = 64;
    loop->heap = malloc(loop->heap_cap * sizeof(*loop->heap));
    if (!loop->heap)
        return APR_ENOMEM;
    loop->doomed = apr_array_make(p, 16, sizeof(apr_pool_t *));
    *out = loop;
    return APR_SUCCESS;
}

void sip_io_init_socket(sip_io_t *io, apr_socket_t *sock, sip_io_cb cb, void *baton)
{
    io->pfd.desc_type = APR_POLL_SOCKET;
    io->pfd.desc.s = sock;
    io->pfd.reqevents = 0;
    io->pfd.client_data = io;
    io->cb = cb;
    io->baton = baton;
    io->added = 0;
}

void sip_io_init_file(sip_io_t *io, apr_file_t *file, sip_io_cb cb, void *baton)
{
    io->pfd.desc_type = APR_POLL_FILE;
    io->pfd.desc.f = file;
    io->pfd.reqevents = 0;
    io->pfd.client_data = io;
    io->cb = cb;
    io->baton = baton;
    io->added = 0;
}

apr_status_t sip_io_watch(sip_loop_t *loop, sip_io_t *io, apr_int16_t events)
{
    apr_status_t rv = APR_SUCCESS;

    if (io->added && io->pfd.reqevents == events)
        return APR_SUCCESS;
    if (io->added) {
        apr_pollset_remove(loop->pollset, &io->pfd);
        io->added = 0;
    }
    io->pfd.reqevents = events;
    if (events) {
        rv = apr_pollset_add(loop->pollset, &io->pfd);
        io->added = (rv == APR_SUCCESS);
    }
    return rv;
}

/* ---- timer heap (min-heap on 'when') ---- */

static void heap_place(sip_loop_t *loop, apr_size_t i, sip_timer_t *t)
{
    loop->heap[i] = t;
    t->slot = i + 1;
}

static void heap_up(sip_loop_t *loop, apr_size_t i)
{
    sip_timer_t *t = loop->heap[i];
    while (i > 0) {
        apr_size_t parent = (i - 1) / 2;
        if (loop->heap[parent]->when <= t->when)
            break;
        heap_place(loop, i, loop->heap[parent]);
        i = parent;
    }
    heap_place(loop, i, t);
}

static void heap_down(sip_loop_t *loop, apr_size_t i)
{
    sip_timer_t *t = loop->heap[i];
    for (;;) {
        apr_size_t c = 2 * i + 1;
        if (c >= loop->nheap)
            break;
        if (c + 1 < loop->nheap && loop->heap[c + 1]->when < loop->heap[c]->when)
            c++;
        if (t->when <= loop->heap[c]->when)
            break;
        heap_place(loop, i, loop->heap[c]);
        i = c;
    }
    heap_place(loop, i, t);
}

void sip_timer_cancel(sip_loop_t *loop, sip_timer_t *t)
{
    apr_size_t i;

    if (!t->slot)
        return;
    i = t->slot - 1;
    t->slot = 0;
    loop->nheap--;
    if (i == loop->nheap)
        return;
    {
        sip_timer_t *last = loop->heap[loop->nheap];
        heap_place(loop, i, last);
        heap_down(loop, i);
        heap_up(loop, last->slot - 1);
    }
}

void sip_timer_set(sip_loop_t *loop, sip_timer_t *t, apr_interval_time_t delay,
                   sip_timer_cb cb, void *baton)
{
    sip_timer_cancel(loop, t);
    t->when = apr_time_now() + delay;
    t->cb = cb;
    t->baton = baton;
    if (loop->nheap == loop->heap_cap) {
        sip_timer_t **bigger = realloc(loop->heap, 2 * loop->heap_cap * sizeof(*bigger));
        if (!bigger)
            abort();    /* out of memory in the engine: the parent restarts it */
        loop->heap = bigger;
        loop->heap_cap *= 2;
    }
    loop->heap[loop->nheap] = t;
    t->slot = ++loop->nheap;
    heap_up(loop, loop->nheap - 1);
}

void sip_loop_defer_destroy(sip_loop_t *loop, apr_pool_t *p)
{
    *(apr_pool_t **)apr_array_push(loop->doomed) = p;
}

static void run_due_timers(sip_loop_t *loop)
{
    apr_time_t now = apr_time_now();

    while (loop->nheap && loop->heap[0]->when <= now) {
        sip_timer_t *t = loop->heap[0];
        sip_timer_cancel(loop, t);
        t->cb(t->baton);
    }
}

static void destroy_doomed(sip_loop_t *loop)
{
    int i;
    for (i = 0; i < loop->doomed->nelts; i++)
        apr_pool_destroy(APR_ARRAY_IDX(loop->doomed, i, apr_pool_t *));
    loop->doomed->nelts = 0;
}

void sip_loop_run(sip_loop_t *loop, volatile sig_atomic_t *stop)
{
    while (!*stop) {
        apr_interval_time_t timeout = -1;
        const apr_pollfd_t *results;
        apr_int32_t n = 0, i;
        apr_status_t rv;

        if (loop->nheap) {
            timeout = loop->heap[0]->when - apr_time_now();
            if (timeout < 0)
                timeout = 0;
            /* epoll counts milliseconds and APR truncates: a timer due
             * in 0.4 ms would make a 0 ms poll, again and again, until
             * it is due (a busy spin measured at 23% of the engine's CPU
             * under load).  Round up: a timer may fire up to 1 ms late. */
            timeout = (timeout + 999) / 1000 * 1000;
        }
        rv = apr_pollset_poll(loop->pollset, timeout, &n, &results);
        if (rv != APR_SUCCESS && !APR_STATUS_IS_EINTR(rv) && !APR_STATUS_IS_TIMEUP(rv)) {
            ap_log_error(APLOG_MARK, APLOG_ERR, rv, ap_server_conf, "sip engine: poll failed");
            apr_sleep(apr_time_from_msec(10));
        }
        for (i = 0; rv == APR_SUCCESS && i < n; i++) {
            sip_io_t *io = results[i].client_data;
            if (io->added)
                io->cb(io->baton, results[i].rtnevents);
        }
        run_due_timers(loop);
        destroy_doomed(loop);
    }
}

void sip_sock_bufsize(int fd, int opt, int bytes)
{
    int force = opt == SO_SNDBUF ? SO_SNDBUFFORCE : SO_RCVBUFFORCE;

    if (setsockopt(fd, SOL_SOCKET, force, &bytes, sizeof(bytes)) < 0)
        setsockopt(fd, SOL_SOCKET, opt, &bytes, sizeof(bytes));
}
