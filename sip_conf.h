/* Per-virtual-host configuration of mod_sip, shared by the glue (which
 * fills it from directives) and the engine layers (which only read it). */
#ifndef SIP_CONF_H
#define SIP_CONF_H

#include "httpd.h"
#include "apr_time.h"

#define SIP_MODULE_VERSION          "0.5"
#define SIP_DEFAULT_SCRIPT          "default.cgi"
#define SIP_DEFAULT_CPL_SCRIPT      "default.cpl"
#define SIP_DEFAULT_SCRIPT_TIMEOUT  apr_time_from_sec(30)
#define SIP_DEFAULT_MAX_OUTPUT      (1024 * 1024)
#define SIP_DEFAULT_MAX_BODY        65536
#define SIP_DEFAULT_TCP_IDLE        apr_time_from_sec(600)
#define SIP_DEFAULT_TIMER_C         apr_time_from_sec(181)  /* > 3 min, RFC 3261 §16.6 step 11 */
#define SIP_DEFAULT_MAX_SCRIPTS     64
#define SIP_DEFAULT_MIN_EXPIRES     60      /* RFC 3261 §10.3 step 7 */
#define SIP_DEFAULT_MAX_EXPIRES     86400
#define SIP_DEFAULT_EXPIRES         3600
#define SIP_DEFAULT_NONCE_LIFETIME  apr_time_from_sec(300)

/* SipMode: requests for registered users are proxied or redirected. */
#define SIP_MODE_PROXY    0
#define SIP_MODE_REDIRECT 1

/* SipProxyOutside: who may have requests forwarded to other domains. */
#define SIP_RELAY_OFF           0   /* nobody */
#define SIP_RELAY_ON            1   /* anyone (an open proxy) */
#define SIP_RELAY_AUTHENTICATED 2   /* users who authenticate with digest */
/* Registrar limits (docs/security.md) */
#define SIP_DEFAULT_MAX_CONTACTS    10      /* bindings per address-of-record */
#define SIP_DEFAULT_MAX_BINDINGS    100000  /* bindings in the memory store */
#define SIP_DEFAULT_MAX_BRANCHES    16      /* targets a request to a registered user forks to */
/* Transport limits (issue 10, items 4, 6, 7). */
#define SIP_DEFAULT_TCP_MSG_TIMEOUT apr_time_from_sec(10)
#define SIP_DEFAULT_TCP_PER_IP      256
#define SIP_DEFAULT_TCP_MAX_CAP     65536   /* derived default never above this */
#define SIP_DEFAULT_LOG_RATE_BURST  10      /* SipLogRateLimit 10 60 */
#define SIP_DEFAULT_LOG_RATE_INTERVAL apr_time_from_sec(60)
/* Users' scripts uploaded in REGISTER (draft-lennox-sip-reg-payload) */
#define SIP_DEFAULT_UPLOAD_MAX_SIZE  65536      /* bytes per script */
#define SIP_DEFAULT_UPLOAD_MAX_TOTAL 262144     /* bytes of all of a user's scripts */
#ifndef SIP_STATE_DIR
#define SIP_STATE_DIR "/var/lib/mod_sip"        /* Makefile: apxs localstatedir/lib/mod_sip */
#endif
#ifndef SIP_SUEXEC_PATH
#define SIP_SUEXEC_PATH "/usr/lib/apache2/sip-suexec"   /* Makefile: apxs libexecdir */
#endif
#define SIP_BWRAP_PATH "/usr/bin/bwrap"
/* SipUploadTmpSize: the sandbox's /tmp (a tmpfs: memory RLimitMEM does not count) */
#define SIP_DEFAULT_UPLOAD_TMP_SIZE  (16 * 1024 * 1024)
/* URI-list services (EXPLODE, RFC 5365; docs/explode.md) */
#define SIP_DEFAULT_EXPLODE_MAX_TARGETS 100     /* list entries; more: 403 */
#define SIP_DEFAULT_EXPLODE_RATE        10      /* explosions per user per minute */
/* Name mapping (sip_namemap.h) */
#define SIP_DEFAULT_NAMEMAP_TTL         apr_time_from_sec(300)  /* SipNameMapCacheTTL */

typedef struct sip_server_conf {
    int enabled;                        /* ProtocolSip; -1 = unset */
    const char *directory;              /* SipDirectory, NULL = none */
    const char *default_script;         /* SipDefaultScript */
    apr_interval_time_t script_timeout; /* SipScriptTimeout; -1 = unset */
    apr_off_t max_output;               /* SipScriptMaxOutput; -1 = unset */
    apr_off_t max_body;                 /* SipLimitRequestBody; -1 = unset */
    apr_interval_time_t tcp_idle;       /* SipTcpIdleTimeout; -1 = unset */
    int record_route;                   /* SipRecordRoute; -1 = unset (On) */
    int proxy_outside;                  /* SipProxyOutside: SIP_RELAY_*; -1 = unset */
    apr_array_header_t *proxy_methods;  /* SipProxyMethods: extra methods, or NULL */
    int auth_qop;                       /* SipAuthQop required (1) / optional (0); -1 */
    apr_interval_time_t timer_c;        /* SipProxyTimerC; -1 = unset */
    int max_scripts;                    /* SipMaxScripts; -1 = unset */
    long min_expires;                   /* SipMinExpires; -1 = unset */
    long max_expires;                   /* SipMaxExpires; -1 = unset */
    long default_expires;               /* SipDefaultExpires; -1 = unset */
    apr_interval_time_t nonce_lifetime; /* SipNonceLifetime; -1 = unset */
    /* registrar limits */
    int max_contacts;                   /* SipMaxContacts; -1 = unset, 0 = none */
    int max_branches;                   /* SipMaxBranches; -1 = unset */

    /* Transport limits.  The first is per vhost; the others are read from
     * the main server only (one engine holds every connection). */
    apr_interval_time_t tcp_msg_timeout; /* SipTcpMessageTimeout; -1 = unset */
    int tcp_max_conns;                  /* SipTcpMaxConnections; 0 = derived, -1 = unset */
    int tcp_max_per_ip;                 /* SipTcpMaxConnectionsPerIP; 0 = none, -1 = unset */
    int log_rate_burst;                 /* SipLogRateLimit lines; 0 = none, -1 = unset */
    apr_interval_time_t log_rate_interval; /* SipLogRateLimit seconds; -1 = unset */

    /* Uploaded scripts, per vhost (SipScriptUpload itself is per <Location>:
     * sip_request_script_upload()) */
    apr_off_t upload_max_size;          /* SipScriptUploadMaxSize; -1 = unset */
    apr_off_t upload_max_total;         /* SipScriptUploadMaxTotal; -1 = unset */
    int upload_integrity;               /* SipScriptUploadIntegrity; -1 = unset (Off) */

    /* CPL (RFC 3880; docs/cpl.md) */
    const char *cpl_default_script;     /* SipCplDefaultScript; NULL = unset, "" = none */
    const char *cpl_mail;               /* SipCplMail command line; NULL = unset, "" = Off */

    /* URI-list services (EXPLODE, RFC 5365; docs/explode.md).  SipExplode
     * itself is per <Location>: sip_request_explode() */
    int explode_max_targets;            /* SipExplodeMaxTargets; -1 = unset */
    int explode_rate;                   /* SipExplodeRate per user per minute; 0 = none; -1 */
    apr_array_header_t *explode_methods; /* SipExplodeMethods (char *); NULL = unset (MESSAGE) */
    int explode_response;               /* SipExplodeResponse 200 or 202; -1 = unset (200) */
    const char *explode_consent_file;   /* SipExplodeConsentFile; NULL = none */
    struct sip_consent *explode_consent; /* ... as loaded (sip_consent.h); NULL = nobody */
    int explode_consent_local;          /* SipExplodeConsentLocal; -1 = unset (Off) */

    /* Name mapping (issue 15 item 2; sip_namemap.h) */
    struct sip_namemap *namemap;        /* SipNameMap as read; NULL = none */
    int namemap_multiple;               /* SipNameMapMultiple 300 or 404; -1 = unset (300) */
    apr_interval_time_t namemap_ttl;    /* SipNameMapCacheTTL; -1 = unset (300 s) */
    /* Lists and forwarding files (issue 15 items 3, 4; sip_lists.h, sip_forward.h) */
    struct sip_lists *lists;            /* SipList, SipListFile; NULL = none */
    int list_mode;                      /* SipListMode: SIP_LIST_MODE_*; -1 = unset (redirect) */
    int list_max_members;               /* SipListMaxMembers; -1 = unset (100) */
    const char *forward_file;           /* SipForwardFile template; NULL = none */
    /* Forwarding files' |program as the owner (issue 15 item 4; sip_fwd_owner.h) */
    long forward_min_uid;               /* SipForwardMinUid; -1 = unset (1000) */
    /* FastCGI workers (issue 18; sip_fcgi.h) */
    struct sip_fcgi_conf *fcgi;         /* SipFastCGIConnect, SipFastCGI; NULL = none */
    /* NAT, RFC 5626 outbound, Path (issue 17; docs/nat.md) */
    int nat_routing;                    /* SipNatRouting: SIP_NAT_*; -1 = unset (auto) */
    long flow_timer;                    /* SipFlowTimer seconds; 0 = Off; -1 = unset (auto) */
    int path_unsupported;               /* SipPathUnsupported: 1 accept, 0 refuse; -1 = unset */
    /* DNS (issue 17; sip_dns.h): read from the main server only */
    const char *dns_servers;            /* SipDNSServer as c-ares's list; NULL = resolv.conf */
    apr_interval_time_t dns_timeout;    /* SipDNSTimeout per try; -1 = unset */
    int dns_tries;                      /* SipDNSTries; -1 = unset */
    long dns_cache_size;                /* SipDNSCacheSize entries; -1 = unset */
    /* proxy DNS failover (issue 17; sip_proxy.c): read from the main server only */
    apr_interval_time_t timer_t1;       /* SipTimerT1; -1 = unset (SIP_T1, 500 ms) */
    /* several engines (issue 19; sip_engine.c): read from the main server only */
    int engines;                        /* SipEngines; -1 = unset (online cores) */
    long nonce_counts;                  /* SipNonceCounts (sip_nonce.c); -1 = unset */
    /* the mod_dbd location store (issue 19; sip_location_dbd.c): main server only */
    int loc_batch;                      /* SipLocationBatch; 0 = unset (256) */
    const char *loc_notify;             /* SipLocationNotify channel, "" = off; NULL = unset */
    int loc_cache_ttl_ms;               /* SipLocationCacheTTL; -1 = unset (0: none) */
} sip_server_conf;

/* Server-wide settings of uploaded scripts (main server only). */
typedef struct sip_upload_conf {
    const char *store;          /* SipScriptStore: directory (file store), absolute */
    const char *user;           /* SipUploadUser: identity uploaded sip-cgi runs as; NULL = none,
                                   and then no sip-cgi upload is accepted (415) */
    const char *workdir;        /* SipUploadWorkDir: one working directory per user below it */
    apr_array_header_t *interpreters; /* SipUploadInterpreters: allowed #! programs (char *) */
    int sandbox;                /* SipUploadSandbox On (bubblewrap, default) / Off */
    const char *suexec;         /* SipUploadSuexec: the setuid helper */
    int used;                   /* some SipScriptUpload On in the configuration */
    int store_ok;               /* set by the parent at start-up: the file store is usable */
    int runnable;               /* set by the parent at start-up: uploaded sip-cgi can run
                                   (user exists and is not root/httpd's, helper usable,
                                   sandbox present when On) */

    /* running uploaded scripts (issue 12 item 6) */
    apr_off_t tmp_size;         /* SipUploadTmpSize: bytes of the sandbox's /tmp */
} sip_upload_conf_t;

const sip_upload_conf_t *sip_upload_conf(void);

/* Message size limits taken from Apache's own LimitRequest* directives. */
typedef struct sip_limits {
    int line;       /* LimitRequestLine */
    int fieldsize;  /* LimitRequestFieldSize */
    int fields;     /* LimitRequestFields */
    apr_off_t body; /* SipLimitRequestBody */
} sip_limits_t;

sip_server_conf *sip_get_conf(server_rec *s);
/* Is SipAuth On anywhere in the configuration? (saves per-request work) */
int sip_auth_enabled(void);
/* Is there any SipErrorDocument or ErrorDocument?  (Without one, error
 * answers need no <Location> walk for a body.) */
int sip_error_docs_used(void);
void sip_get_limits(server_rec *s, sip_limits_t *lim);

#endif
