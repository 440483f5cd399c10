/* MIME pieces of SIP bodies and their headers (message layer), shared by
 * the REGISTER payloads (draft-lennox-sip-reg-payload) and EXPLODE:
 * Content-Disposition with its parameters, multipart/mixed bodies
 * (RFC 2046 §5.1), Accept and Accept-Disposition lists, SIP-dates. */
#ifndef SIP_MIME_H
#define SIP_MIME_H

#include "apr_pools.h"
#include "apr_tables.h"
#include "apr_time.h"
#include "sip_message.h"

/* ---- Content-Disposition (RFC 3261 §20.11; draft §3.1) ---- */

typedef struct sip_disposition {
    const char *type;       /* disposition type, lower case */
    const char *action;     /* action=, lower case, or NULL */
    const char *handling;   /* handling=, lower case, or NULL */
    int has_mdate;          /* modification-date= was given */
    apr_time_t mdate;       /* ... and parsed (0: absent or not a SIP-date, §3.3 rule) */
    apr_table_t *params;    /* every parameter: name lower case, value unquoted ("" flag) */
} sip_disposition_t;

/* 0, or -1 when 'value' is not "token *(; param)" (or a parameter is
 * given twice). */
int sip_mime_disposition_parse(apr_pool_t *p, const char *value, sip_disposition_t *out);

/* ---- Content-Type ---- */

/* "type/subtype" in lower case and the boundary parameter (unquoted, or
 * NULL); 0, or -1 when 'value' is no media type. */
int sip_mime_content_type(apr_pool_t *p, const char *value, const char **type,
                          const char **boundary);

/* ---- SIP-date (RFC 3261 §25.1: RFC 1123 date in GMT) ---- */

/* The time, or 0 when 's' is not a date (the caller treats the header or
 * parameter as absent: draft §3.3).  Surrounding quotes are allowed. */
apr_time_t sip_mime_date_parse(const char *s);
const char *sip_mime_date_format(apr_pool_t *p, apr_time_t t);

/* ---- Accept and Accept-Disposition ---- */

typedef struct sip_mime_range {
    const char *value;      /* "type/subtype" (Accept) or a token (Accept-Disposition),
                               lower case; wildcards: "*" alone, or as the type or
                               the subtype */
    int q1000;              /* q * 1000 (Accept only; 1000 when absent) */
} sip_mime_range_t;

typedef struct sip_mime_list {
    int present;                    /* the header was there (maybe empty: accepts nothing) */
    apr_array_header_t *ranges;     /* sip_mime_range_t */
} sip_mime_list_t;

/* Every header 'name' of 'hdrs' (repeated headers and comma lists
 * alike); parameters other than q are ignored.  Returns 0, or -1 when an
 * element is malformed (it is left out). */
int sip_mime_list_parse(apr_pool_t *p, const apr_array_header_t *hdrs, const char *name,
                        int media, sip_mime_list_t *out);

/* Does Accept allow 'media_type'?  HTTP rules: the most specific range
 * that matches decides, and q=0 refuses.  An absent header allows
 * everything, an empty one nothing. */
int sip_mime_accepts_type(const sip_mime_list_t *accept, const char *media_type);
/* Does Accept-Disposition allow disposition 'type' ("*" matches all)? */
int sip_mime_accepts_disposition(const sip_mime_list_t *ad, const char *type);
/* Does the list name 'media_type' through a range that matches it with
 * q > 0 (a header that is absent names nothing)? */
int sip_mime_names_type(const sip_mime_list_t *accept, const char *media_type);

/* ---- multipart/mixed (RFC 2046 §5.1) ---- */

typedef struct sip_mime_part {
    apr_array_header_t *headers;    /* sip_header_t, compact names made long */
    const char *body;
    apr_size_t len;
} sip_mime_part_t;

/* Split 'body' at 'boundary' into parts (sip_mime_part_t); the preamble
 * and epilogue are dropped.  0, or -1 with *why when it is malformed (no
 * delimiter, no close delimiter, a bad part header, a bad boundary). */
int sip_mime_multipart_split(apr_pool_t *p, const char *body, apr_size_t len,
                             const char *boundary, apr_array_header_t **parts, const char **why);

/* First header 'name' of a part, or NULL. */
const char *sip_mime_part_header(const sip_mime_part_t *part, const char *name);

/* A multipart/mixed body of 'parts' (sip_mime_part_t), with a boundary
 * that occurs in none of them (*boundary). */
const char *sip_mime_multipart_build(apr_pool_t *p, const apr_array_header_t *parts,
                                     const char **boundary, apr_size_t *len);

#endif
