/* The compiled form of a CPL script (RFC 3880): what sip_cpl_compile()
 * builds (sip_cpl.c) and the interpreter walks (sip_cpl_run.c).  Private
 * to those two files and their unit tests; nothing else looks inside.
 * Every attribute is parsed and checked once, at compile time, so the
 * walk never meets a value it cannot use. */
#ifndef SIP_CPL_TREE_H
#define SIP_CPL_TREE_H

#include <strings.h>

#include "sip_cpl.h"
#include "sip_cpl_run.h"
#include "sip_cpl_time.h"

/* Limits of one run (RFC 3880 §8 asks servers to bound what a script may
 * cost).  Compilation already refuses recursion through <sub>, so a walk
 * never loops, but a chain of subactions can be long: a run that follows
 * more <sub> elements, or visits more nodes in all (a proxy's outputs
 * lead on to more nodes), ends as SIP_CPL_END_FAILED. */
#define CPL_RUN_MAX_SUBS   64
#define CPL_RUN_MAX_NODES  1000

typedef enum {
    CPL_ADDRESS_SWITCH = 1,
    CPL_STRING_SWITCH,
    CPL_LANGUAGE_SWITCH,
    CPL_TIME_SWITCH,
    CPL_PRIORITY_SWITCH,
    CPL_LOCATION,
    CPL_LOOKUP,
    CPL_REMOVE_LOCATION,
    CPL_SUB,
    CPL_PROXY,
    CPL_REDIRECT,
    CPL_REJECT,
    CPL_LOG,
    CPL_MAIL
} cpl_kind_t;

/* address-switch field (§4.1) */
enum { CPL_F_ORIGIN = 1, CPL_F_DESTINATION, CPL_F_ORIGINAL_DESTINATION };
/* address-switch subfield (§4.1); 0 is the whole address */
enum {
    CPL_SF_ADDRESS = 0, CPL_SF_ADDRESS_TYPE, CPL_SF_USER, CPL_SF_HOST, CPL_SF_PORT,
    CPL_SF_TEL, CPL_SF_DISPLAY, CPL_SF_PASSWORD, CPL_SF_ALIAS_TYPE
};
/* string-switch field (§4.2) */
enum { CPL_S_SUBJECT = 1, CPL_S_ORGANIZATION, CPL_S_USER_AGENT, CPL_S_DISPLAY };

/* How one output of a switch tests the call. */
enum {
    CPL_OP_IS = 1, CPL_OP_CONTAINS, CPL_OP_SUBDOMAIN_OF,   /* address, string */
    CPL_OP_MATCHES,                                         /* language */
    CPL_OP_TIME,                                            /* time */
    CPL_OP_LESS, CPL_OP_GREATER, CPL_OP_EQUAL               /* priority */
};

/* Call priorities in the order of §4.5 (Priority header, RFC 3261
 * §20.26); a value none of these is CPL_PRIO_OTHER. */
enum {
    CPL_PRIO_NON_URGENT = 0, CPL_PRIO_NORMAL, CPL_PRIO_URGENT, CPL_PRIO_EMERGENCY,
    CPL_PRIO_OTHER
};

/* Outputs of <lookup> (§5.2) and <proxy> (§6.1), indexes of cpl_node.out */
enum { CPL_LK_SUCCESS = 0, CPL_LK_NOTFOUND, CPL_LK_FAILURE };
enum {
    CPL_PX_BUSY = 0, CPL_PX_NOANSWER, CPL_PX_REDIRECTION, CPL_PX_FAILURE, CPL_PX_DEFAULT,
    CPL_PX_OUTPUTS
};

/* CPL_PRIO_* of a priority token (case-insensitive, §4.5). */
static inline int cpl_priority_value(const char *v)
{
    static const char *const names[] = {"non-urgent", "normal", "urgent", "emergency"};
    int i;

    for (i = 0; i < 4; i++)
        if (!strcasecmp(v, names[i]))
            return i;
    return CPL_PRIO_OTHER;
}

typedef struct cpl_node cpl_node_t;

/* One output of a switch: a test, <not-present> or <otherwise>. */
typedef enum { CPL_CASE_TEST = 0, CPL_CASE_NOT_PRESENT, CPL_CASE_OTHERWISE } cpl_case_kind_t;

typedef struct cpl_case {
    cpl_case_kind_t kind;
    int op;                         /* CPL_OP_* (tests only) */
    const char *value;              /* the attribute's value as written */
    int prio;                       /* priority tests: CPL_PRIO_* of 'value' */
    const sip_cpl_time_t *time;     /* time tests */
    const cpl_node_t *next;         /* what the output leads to; NULL: nothing */
    int line;
} cpl_case_t;

struct cpl_node {
    cpl_kind_t kind;
    const char *elem;               /* element name, for log lines */
    int line;
    /* the one child of location, lookup's none, remove-location, log and
     * mail; for <sub>, the subaction's first node */
    const cpl_node_t *next;

    /* switches */
    int field, subfield;
    const cpl_case_t *cases;
    int ncases;

    /* location (url, q1000, clear), lookup (source, timeout, clear),
     * remove-location (url: NULL means every location) */
    const char *url;
    int q1000;
    int clear;
    const char *source;
    int timeout;

    /* lookup and proxy outputs; 'has_out' bit i: output i is written
     * (even when empty) */
    const cpl_node_t *out[CPL_PX_OUTPUTS];
    unsigned has_out;

    /* proxy */
    int recurse;
    sip_cpl_ordering_t ordering;
    /* redirect */
    int permanent;
    /* reject */
    int status;
    const char *reason;
    /* log (name, comment), mail (url) */
    const char *name;
    const char *comment;
    /* sub */
    const char *ref;
};

struct sip_cpl_script {
    const char *name;
    int has[2];                     /* indexed by sip_cpl_dir_t */
    const cpl_node_t *top[2];       /* first node of <incoming>, <outgoing> */
    int nodes;                      /* compiled nodes, for tests */
};

#endif
