#include "sip_nonce.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "apr_shm.h"

typedef struct {
    apr_uint64_t hash;          /* of the nonce; 0: never used */
    apr_time_t stale_at;        /* free again from then on */
    apr_uint64_t nc;            /* the highest nonce-count seen */
} nc_slot_t;

typedef struct {
    pthread_mutex_t lock;       /* process-shared, robust */
    nc_slot_t slot[SIP_NONCE_BUCKET];
} nc_bucket_t;

typedef struct {
    apr_uint32_t magic;         /* NC_MAGIC and the bucket size: a segment */
    apr_uint32_t bucket_size;   /* left by another build is not reused */
    apr_uint64_t buckets;
    nc_bucket_t bucket[];
} nc_table_t;

#define NC_MAGIC 0x5349504eu    /* "SIPN" */
#define NC_SHM_KEY "mod_sip_nonce_counts"

static nc_table_t *table;

/* FNV-1a: nonces are ours (check_nonce verified their keyed hash before
 * their count is looked at), so nobody can choose them to collide. */
static apr_uint64_t nonce_hash(const char *nonce)
{
    apr_uint64_t h = APR_UINT64_C(14695981039346656037);

    for (; *nonce; nonce++)
        h = (h ^ (unsigned char)*nonce) * APR_UINT64_C(1099511628211);
    return h ? h : 1;
}

static int bucket_lock(nc_bucket_t *b)
{
    int rc = pthread_mutex_lock(&b->lock);

    /* An engine died holding it (kill -9).  Its slot is whole or still
     * the stale one it was replacing: a slot's hash is written last. */
    if (rc == EOWNERDEAD)
        rc = pthread_mutex_consistent(&b->lock);
    return rc == 0;
}

static void bucket_unlock(nc_bucket_t *b)
{
    pthread_mutex_unlock(&b->lock);
}

/* Check and record in 't' (sip_nonce_count, and copying a table).  A
 * nonce may live in either of two buckets and a new one goes to the
 * emptier ("two choices"): the table fills evenly, so a bucket is seldom
 * full while the table has room.  Both are locked, lower index first. */
static sip_nc_verdict_t table_count(nc_table_t *t, apr_uint64_t h, apr_uint64_t nc,
                                    apr_time_t stale_at, apr_time_t now)
{
    apr_uint64_t i1 = h % t->buckets, i2 = ((h >> 32) | (h << 32)) % t->buckets;
    nc_bucket_t *b[2];
    nc_slot_t *free_slot[2] = {NULL, NULL};
    int nfree[2] = {0, 0}, n = i1 == i2 ? 1 : 2, k, i;
    sip_nc_verdict_t v = SIP_NC_FULL;

    b[0] = &t->bucket[i1 < i2 ? i1 : i2];
    b[1] = &t->bucket[i1 < i2 ? i2 : i1];
    if (!bucket_lock(b[0]))
        return SIP_NC_FULL;
    if (n == 2 && !bucket_lock(b[1])) {
        bucket_unlock(b[0]);
        return SIP_NC_FULL;
    }
    for (k = 0; k < n; k++)
        for (i = 0; i < SIP_NONCE_BUCKET; i++) {
            nc_slot_t *s = &b[k]->slot[i];

            /* The nonce's own slot even when it looks stale: another
             * vhost's SipNonceLifetime may keep the nonce valid longer. */
            if (s->hash == h) {
                if (nc <= s->nc)
                    v = SIP_NC_REPLAY;
                else {
                    s->nc = nc;
                    if (stale_at > s->stale_at)
                        s->stale_at = stale_at;
                    v = SIP_NC_FRESH;
                }
                goto done;
            }
            if (!s->hash || s->stale_at <= now) {
                if (!free_slot[k])
                    free_slot[k] = s;
                nfree[k]++;
            }
        }
    k = nfree[1] > nfree[0];
    if (free_slot[k]) {
        free_slot[k]->nc = nc;
        free_slot[k]->stale_at = stale_at;
        free_slot[k]->hash = h;
        v = SIP_NC_FRESH;
    }
done:
    if (n == 2)
        bucket_unlock(b[1]);
    bucket_unlock(b[0]);
    return v;
}

static apr_status_t detach(void *data)
{
    if (table == data)
        table = NULL;
    return APR_SUCCESS;
}

static apr_status_t table_init(nc_table_t *t, apr_uint64_t buckets)
{
    pthread_mutexattr_t attr;
    apr_uint64_t i;
    int rc;

    memset(t, 0, sizeof(*t) + buckets * sizeof(nc_bucket_t));
    t->magic = NC_MAGIC;
    t->bucket_size = sizeof(nc_bucket_t);
    t->buckets = buckets;
    if ((rc = pthread_mutexattr_init(&attr)) != 0)
        return rc;
    rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
    if (!rc)
        rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
    for (i = 0; !rc && i < buckets; i++)
        rc = pthread_mutex_init(&t->bucket[i].lock, &attr);
    pthread_mutexattr_destroy(&attr);
    return rc;
}

apr_status_t sip_nonce_attach(apr_pool_t *pp, apr_pool_t *life, apr_size_t slots)
{
    apr_uint64_t buckets = (slots + SIP_NONCE_BUCKET - 1) / SIP_NONCE_BUCKET, i;
    apr_shm_t *old = NULL, *shm;
    nc_table_t *t, *prev = NULL;
    apr_time_t now = apr_time_now();
    apr_status_t rv;
    int j;

    if (buckets < 1)
        buckets = 1;
    apr_pool_userdata_get((void **)&old, NC_SHM_KEY, pp);
    if (old) {
        prev = apr_shm_baseaddr_get(old);
        if (prev->magic != NC_MAGIC || prev->bucket_size != sizeof(nc_bucket_t))
            prev = NULL;        /* another build's layout: start afresh */
        else if (prev->buckets == buckets) {
            table = prev;       /* a graceful restart: the counts go on */
            apr_pool_cleanup_register(life, prev, detach, apr_pool_cleanup_null);
            return APR_SUCCESS;
        }
    }
    rv = apr_shm_create(&shm, sizeof(nc_table_t) + buckets * sizeof(nc_bucket_t), NULL, pp);
    if (rv != APR_SUCCESS)
        return rv;
    t = apr_shm_baseaddr_get(shm);
    if ((rv = table_init(t, buckets)) != APR_SUCCESS) {
        apr_shm_destroy(shm);
        return rv;
    }
    /* SipNonceCounts changed: the live counts move to the new table (no
     * engine runs while the parent reads the configuration again). */
    for (i = 0; prev && i < prev->buckets; i++)
        for (j = 0; j < SIP_NONCE_BUCKET; j++) {
            const nc_slot_t *s = &prev->bucket[i].slot[j];

            if (s->hash && s->stale_at > now)
                table_count(t, s->hash, s->nc, s->stale_at, now);
        }
    if (old) {
        apr_pool_cleanup_kill(life, apr_shm_baseaddr_get(old), detach);
        apr_shm_destroy(old);
    }
    apr_pool_userdata_set(shm, NC_SHM_KEY, apr_pool_cleanup_null, pp);
    /* on 'life', not 'pp': httpd unloads this module when it clears pconf,
     * before the process pool ends, and a cleanup of ours left there
     * would then be called at an address no longer mapped; where 'life'
     * is 'pp' (unit tests), registered after the segment's own, so it
     * runs before the segment is unmapped */
    apr_pool_cleanup_register(life, t, detach, apr_pool_cleanup_null);
    table = t;
    return APR_SUCCESS;
}

int sip_nonce_attached(void)
{
    return table != NULL;
}

apr_size_t sip_nonce_slots(void)
{
    return table ? (apr_size_t)table->buckets * SIP_NONCE_BUCKET : 0;
}

sip_nc_verdict_t sip_nonce_count(const char *nonce, apr_uint64_t nc, apr_time_t stale_at,
                                 apr_time_t now)
{
    if (!table || !nonce)
        return SIP_NC_FULL;
    return table_count(table, nonce_hash(nonce), nc, stale_at, now);
}

const char *sip_nonce_parse_slots(const char *arg, long *slots)
{
    char *end = NULL;
    long n = strtol(arg, &end, 10);

    if (end == arg || *end || n < SIP_NONCE_MIN_SLOTS || n > SIP_NONCE_MAX_SLOTS)
        return "SipNonceCounts needs a number of nonces from 16 to 16777216";
    *slots = n;
    return NULL;
}
