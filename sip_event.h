/* The engine's single event loop: an apr_pollset for descriptors and a
 * binary heap of timers.  Everything in the SIP engine runs from here, so
 * nothing in the engine may block. */
#ifndef SIP_EVENT_H
#define SIP_EVENT_H

#include "apr_pools.h"
#include "apr_poll.h"
#include "apr_time.h"

typedef struct sip_loop sip_loop_t;

typedef void (*sip_io_cb)(void *baton, apr_int16_t rtnevents);
typedef void (*sip_timer_cb)(void *baton);

/* A descriptor watched by the loop; embed it in the object it serves. */
typedef struct sip_io {
    apr_pollfd_t pfd;
    sip_io_cb cb;
    void *baton;
    int added;
} sip_io_t;

/* A one-shot timer; embed it in its owner, re-arm with sip_timer_set. */
typedef struct sip_timer {
    apr_time_t when;
    sip_timer_cb cb;
    void *baton;
    apr_size_t slot;    /* position in the heap + 1; 0 = not armed */
} sip_timer_t;

apr_status_t sip_loop_create(sip_loop_t **loop, apr_pool_t *p);

/* A socket's SO_SNDBUF or SO_RCVBUF ('opt') of 'bytes', past the system's
 * maximum where the process may (the parent, as root: the FORCE option). */
void sip_sock_bufsize(int fd, int opt, int bytes);

void sip_io_init_socket(sip_io_t *io, apr_socket_t *sock, sip_io_cb cb, void *baton);
void sip_io_init_file(sip_io_t *io, apr_file_t *file, sip_io_cb cb, void *baton);
/* Watch for 'events' (APR_POLLIN/APR_POLLOUT); 0 stops watching. */
apr_status_t sip_io_watch(sip_loop_t *loop, sip_io_t *io, apr_int16_t events);

void sip_timer_set(sip_loop_t *loop, sip_timer_t *t, apr_interval_time_t delay,
                   sip_timer_cb cb, void *baton);
void sip_timer_cancel(sip_loop_t *loop, sip_timer_t *t);
#define sip_timer_armed(t) ((t)->slot != 0)

/* Destroy a pool once the current batch of events has been dispatched, so
 * that events already returned for its objects never touch freed memory. */
void sip_loop_defer_destroy(sip_loop_t *loop, apr_pool_t *p);

/* Run until *stop becomes non-zero (set from a signal handler). */
void sip_loop_run(sip_loop_t *loop, volatile sig_atomic_t *stop);

#endif
