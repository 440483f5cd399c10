/* Spawn attributes shared by everything the engine starts (SIP-CGI
 * scripts, <mail> commands): the child gets an empty signal mask and
 * default dispositions (the engine ignores SIGPIPE and blocks nothing a
 * child should inherit), and a process group of its own, so that a
 * timeout or a CANCEL can kill it together with whatever it started. */
#ifndef SIP_SPAWN_H
#define SIP_SPAWN_H

#include <signal.h>
#include <spawn.h>

static inline void sip_spawn_attr_init(posix_spawnattr_t *attr)
{
    sigset_t none, all;

    posix_spawnattr_init(attr);
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(attr, &none);
    posix_spawnattr_setsigdefault(attr, &all);
    posix_spawnattr_setpgroup(attr, 0);
    posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
                                       | POSIX_SPAWN_SETPGROUP);
}

#endif
