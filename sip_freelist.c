/* sip_freelist.c: free lists of small malloc() blocks; see sip_freelist.h. */
#include "sip_freelist.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

struct sip_freelist_block {
    sip_freelist_block_t *next;
};

void sip_freelist_init(sip_freelist_t *fl, size_t max_held)
{
    memset(fl, 0, sizeof(*fl));
    fl->max_held = max_held;
    fl->max_class = max_held / 8;
}

int sip_freelist_class(size_t n)
{
    size_t k = n ? (n + SIP_FREELIST_GRAIN - 1) / SIP_FREELIST_GRAIN : 1;

    return k < SIP_FREELIST_CLASSES ? (int)k : 0;
}

void *sip_freelist_get(sip_freelist_t *fl, size_t n)
{
    int k = sip_freelist_class(n);
    sip_freelist_block_t *b;

    if (!k)
        return malloc(n);
    b = fl->head[k];
    if (b) {
        fl->head[k] = b->next;
        fl->count[k]--;
        fl->held -= (size_t)k * SIP_FREELIST_GRAIN;
        fl->hits++;
        return b;
    }
    fl->misses++;
    /* the class's own size: the block comes back to class k (or above,
     * if malloc rounds up further), never below */
    return malloc((size_t)k * SIP_FREELIST_GRAIN);
}

void sip_freelist_put(sip_freelist_t *fl, void *p)
{
    size_t u, k, sz;
    sip_freelist_block_t *b = p;

    if (!p)
        return;
    /* the block's real size, whoever allocated it: a class is a lower
     * bound, so any block of class k serves any request of class k */
    u = malloc_usable_size(p);
    k = u / SIP_FREELIST_GRAIN;
    sz = k * SIP_FREELIST_GRAIN;
    if (k == 0 || k >= SIP_FREELIST_CLASSES || fl->held + sz > fl->max_held
        || (fl->count[k] + 1) * sz > fl->max_class) {
        free(p);
        return;
    }
    b->next = fl->head[k];
    fl->head[k] = b;
    fl->count[k]++;
    fl->held += sz;
}

void *sip_freelist_resize(sip_freelist_t *fl, void *p, size_t n)
{
    if (!p)
        return sip_freelist_get(fl, n);
    if (n && n <= malloc_usable_size(p))
        return p;
    return realloc(p, n ? n : 1);
}

void sip_freelist_drain(sip_freelist_t *fl)
{
    int k;

    for (k = 1; k < SIP_FREELIST_CLASSES; k++) {
        while (fl->head[k]) {
            sip_freelist_block_t *b = fl->head[k];

            fl->head[k] = b->next;
            free(b);
        }
        fl->count[k] = 0;
    }
    fl->held = 0;
}
