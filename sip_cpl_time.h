/* CPL time switches (RFC 3880 §4.4): does a moment fall in one of the
 * periods a <time> element describes?  iCalendar recurrences (RFC 2445,
 * now RFC 5545) are computed by libical, not by hand.  Pure logic. */
#ifndef SIP_CPL_TIME_H
#define SIP_CPL_TIME_H

#include "apr_pools.h"
#include "apr_time.h"

typedef struct sip_cpl_time sip_cpl_time_t;

/* Compile one <time> element: 'attrs' holds its attributes as name/value
 * pairs ("dtstart", "20261206T090000", "freq", "weekly", ..., NULL), names
 * as in RFC 3880 §4.4 (dtstart, dtend, duration, freq, interval, until,
 * count, bysecond, byminute, byhour, byday, bymonthday, byyearday, byweekno,
 * bymonth, wkst, bysetpos); 'tzid' and 'tzurl' are the enclosing
 * <time-switch>'s (NULL when absent: floating times are the server's local
 * time, §4.4.1).  An unknown tzid is refused (tzurl is never fetched).
 * Returns NULL with *why (short, printable) on a bad value.  Anything
 * libical allocates is freed with 'p'. */
sip_cpl_time_t *sip_cpl_time_compile(apr_pool_t *p, const char *tzid, const char *tzurl,
                                     const char *const *attrs, const char **why);

/* 1 when 'now' is within an occurrence of 't' (start inclusive, end
 * exclusive), else 0. */
int sip_cpl_time_match(const sip_cpl_time_t *t, apr_time_t now);

#endif
