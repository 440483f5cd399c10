/* sip_freelist.h: free lists of small malloc() blocks (message layer).
 *
 * libosip2 allocates a few dozen small objects per parsed message (URIs,
 * parameters, header values) and frees them all when the transaction ends.
 * glibc's per-thread cache holds 7 blocks of a size; the rest of each burst
 * goes through _int_malloc and _int_free (a tenth of an engine's CPU per
 * OPTIONS or REGISTER, issue 19 point 3).  These lists keep freed blocks by
 * size class, without limit per class but within a byte budget.
 *
 * Every block is an ordinary malloc() block: a class is read back with
 * malloc_usable_size(), so a block may be freed with free() or handed to
 * these lists whichever way it was allocated.  A block grown by realloc()
 * comes back in a larger class than it left, so one class may fill with
 * blocks nobody asks for: each class keeps at most an eighth of the budget
 * and the others still find room.  Not thread-safe: one list
 * belongs to one thread. */
#ifndef SIP_FREELIST_H
#define SIP_FREELIST_H

#include <stddef.h>

#define SIP_FREELIST_GRAIN   16     /* class k holds blocks of usable size >= 16k */
#define SIP_FREELIST_CLASSES 33     /* k = 1..32: requests up to 512 bytes */

typedef struct sip_freelist_block sip_freelist_block_t;

typedef struct sip_freelist {
    sip_freelist_block_t *head[SIP_FREELIST_CLASSES];
    size_t count[SIP_FREELIST_CLASSES];
    size_t held;                /* bytes kept (16k per block of class k) */
    size_t max_held;            /* beyond it freed blocks go back to free() */
    size_t max_class;           /* the same for one class: max_held / 8 */
    unsigned long hits, misses; /* get() served from a list / by malloc() */
} sip_freelist_t;

void sip_freelist_init(sip_freelist_t *fl, size_t max_held);
/* malloc(n): a block of usable size >= n, or NULL */
void *sip_freelist_get(sip_freelist_t *fl, size_t n);
/* free(p): p any malloc() block or NULL */
void sip_freelist_put(sip_freelist_t *fl, void *p);
/* realloc(p, n) */
void *sip_freelist_resize(sip_freelist_t *fl, void *p, size_t n);
/* the class a request of n bytes is served from; 0: too large, malloc() */
int sip_freelist_class(size_t n);
/* free() every block kept */
void sip_freelist_drain(sip_freelist_t *fl);

#endif
