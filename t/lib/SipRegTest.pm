package SipRegTest;
# Helpers for the registrar tests (t/reg-*.t), on top of SipTest (which is
# not modified: this is a subclass).
#
#   my $t = SipRegTest->new(vhost_conf => 'SipMinExpires 1');
#   my $r = $t->register(user => 'bob', contacts => ['<sip:bob@127.0.0.1:5555>'],
#                        expires => 600, call_id => $cid, cseq => 1);
#   my %b = SipRegTest::binding_map($r);     # uri => { expires, q, params, raw }
#   my ($r2, %now) = $t->fetch('bob');        # REGISTER without Contact
#
# SIPp: rsipp_start / rsipp_wait / rsipp_ok / rsipp_msgs are self-contained
# copies (own names) of the harness' SIPp helpers, so that these tests do not
# depend on a concurrently edited SipTest.pm.  Every sipp started here is
# killed by pid at the latest when the test script ends.

use strict;
use warnings;
use Test::More;
use POSIX ();
use Time::HiRes qw(time sleep);
use SipTest qw(parse_msg rand_token free_port wait_until);
our @ISA = ('SipTest');

our $SIPP = $ENV{SIPP} || '/usr/bin/sipp';
my %SIPP_PIDS;    # pid => 1 for every sipp started by this process and not reaped

# ------------------------------------------------------------ SIP helpers

sub aor { my ($self, $user) = @_; return "sip:$user\@127.0.0.1:" . $self->sip_port }

# REGISTER for $o{user} (To/From sip:user@127.0.0.1:SIPPORT unless $o{to}).
#   contacts => [ header values ] (one Contact header each; a value may hold
#               several comma separated contacts), none => fetch only
#   expires  => Expires header value (omitted when undef)
#   call_id, cseq (default 1), transport 'udp'|'tcp', sock, uri, to,
#   headers => [ more ], timeout (default 5)
# Returns the final response (SipTest::Msg) or undef; in list context all
# responses.
sub register {
    my ($self, %o) = @_;
    my $user = $o{user} // 'user';
    my $to = $o{to} // '<' . $self->aor($user) . '>';
    my @h;
    push @h, Contact => $_ for @{ $o{contacts} || [] };
    push @h, Expires => $o{expires} if defined $o{expires};
    push @h, @{ $o{headers} || [] };
    my $tr = lc($o{transport} // 'udp');
    my %a = (method => 'REGISTER', uri => $o{uri} // 'sip:127.0.0.1:' . $self->sip_port,
             to => $to, from => "$to;tag=" . rand_token(8),
             call_id => $o{call_id} // (rand_token(16) . '@reg.test'),
             cseq => $o{cseq} // 1, headers => \@h, timeout => $o{timeout} // 5);
    if ($tr eq 'udp') {
        $a{sock} = $o{sock} // $self->udp_socket;
    } elsif ($o{sock}) {
        $a{sock} = $o{sock};
    }
    my @r = eval { $self->transact($tr, %a) };
    diag("register: $@") if $@;
    @r = grep { $_ && $_->is_response } @r;
    return wantarray ? @r : (@r && $r[-1]->is_final ? $r[-1] : undef);
}

# REGISTER without Contact for $user: (final response, binding_map of it).
sub fetch {
    my ($self, $user, %o) = @_;
    my $r = $self->register(user => $user, %o);
    return ($r, binding_map($r));
}

# Send a request (default MESSAGE) to sip:user@127.0.0.1:SIPPORT over UDP;
# the final response (or undef).  An INVITE's non-2xx final gets its ACK.
sub request_to {
    my ($self, $user, %o) = @_;
    my $method = $o{method} // 'MESSAGE';
    my $s = $self->udp_socket;
    my $raw = $self->sip_request(method => $method, uri => $self->aor($user), sock => $s,
                                 ($method eq 'INVITE'
                                  ? (headers => [ Contact => '<sip:caller@127.0.0.1:' . $s->sockport . '>' ])
                                  : ()));
    my @r = $self->udp_req($raw, $o{timeout} // 5, sock => $s);
    my $f = @r && $r[-1]->is_final ? $r[-1] : undef;
    if ($f && $method eq 'INVITE' && $f->code >= 300) {
        $self->udp_send($self->ack_for($raw, $f), sock => $s);
    }
    return $f;
}

# Contacts of a response as a list of hashes
#   { uri, expires, q, params (the other header params, ";a=b..."), raw }
sub contacts_of {
    my ($r) = @_;
    return () unless $r;
    my @out;
    for my $e ($r->header_elems('contact')) {
        my %c = (raw => $e);
        if ($e =~ /^(?:"(?:[^"\\]|\\.)*"\s*|[^<"]*)<([^>]*)>(.*)$/s) {
            $c{uri} = $1;
            my $rest = $2;
            my @p;
            for my $p (grep { length } map { s/^\s+|\s+$//gr } split /;/, $rest) {
                my ($k, $v) = split /=/, $p, 2;
                if (lc $k eq 'expires') { $c{expires} = $v }
                elsif (lc $k eq 'q')    { $c{q} = $v }
                else { push @p, $p }
            }
            $c{params} = join '', map { ";$_" } @p;
        } else {
            $c{uri} = $e;    # '*' or an addr-spec without <>
        }
        push @out, \%c;
    }
    return @out;
}

# uri => contact hash (see contacts_of)
sub binding_map {
    my ($r) = @_;
    return map { $_->{uri} => $_ } contacts_of($r);
}

# "uri expires q" lines, for diagnostics
sub dump_contacts {
    my ($r) = @_;
    return $r ? join("\n", map { "  Contact: $_" } $r->headers('contact')) || '  (no Contact)' : '  (no response)';
}

# Check a binding_map against { uri => [min_expires, max_expires, q, params?] }
# exactly (no other binding).  One test.
sub bindings_are {
    my ($got, $want, $name, $resp) = @_;
    my @err;
    for my $u (sort keys %$want) {
        my ($lo, $hi, $q, $params) = @{ $want->{$u} };
        my $g = $got->{$u};
        unless ($g) { push @err, "missing $u"; next }
        push @err, "$u: expires " . ($g->{expires} // 'none') . " not in [$lo, $hi]"
            unless defined $g->{expires} && $g->{expires} =~ /^\d+$/ && $g->{expires} >= $lo && $g->{expires} <= $hi;
        push @err, "$u: q " . ($g->{q} // 'none') . " ne $q"
            if defined $q && ($g->{q} // '') ne $q;
        push @err, "$u: params '" . ($g->{params} // '') . "' ne '$params'"
            if defined $params && ($g->{params} // '') ne $params;
    }
    for my $u (sort keys %$got) {
        push @err, "unexpected binding $u" unless $want->{$u};
    }
    ok(!@err, $name) or diag(join("\n", @err) . "\nresponse contacts:\n" . dump_contacts($resp));
    return !@err;
}

# ------------------------------------------------------------------ SIPp

sub sipp_present {
    return 1 if -x $SIPP;
    fail("sipp available at $SIPP (install Debian package sip-tester)");
    return 0;
}

sub _port_bound {
    my ($port, $proto) = @_;
    my $want = sprintf '0100007F:%04X', $port;
    open(my $fh, '<', "/proc/net/$proto") or return 0;
    while (my $l = <$fh>) {
        my @f = split ' ', $l;
        next unless @f > 3 && $f[1] eq $want;
        return 1 if $proto eq 'udp' || $f[3] eq '0A';
    }
    return 0;
}

# Options: name (unique per server), sf (file in t/sipp/ or a path), port,
# transport (u1, t1), m, r, d, service, remote (host:port), keys => {},
# timeout (default '30s'), args => [].  Returns a handle once sipp is bound.
sub rsipp_start {
    my ($self, %o) = @_;
    my $name = $o{name} // 'sipp';
    my $sf = $o{sf} // die "rsipp_start: sf missing\n";
    $sf = SipTest->repo . "/t/sipp/$sf" unless $sf =~ m{/};
    my $port = $o{port} // free_port();
    my $tr = $o{transport} // 'u1';
    my $dir = $self->dir;
    my %h = (name => $name, port => $port, sf => $sf, transport => $tr,
             stf => "$dir/sipp-$name.csv", out => "$dir/sipp-$name.out",
             msgfile => "$dir/sipp-$name-messages.log", errfile => "$dir/sipp-$name-errors.log");
    unlink @h{qw(stf out msgfile errfile)};
    my @cmd = ($SIPP, '-sf', $sf, '-i', '127.0.0.1', '-p', $port, '-t', $tr,
               '-m', $o{m} // 1, '-r', $o{r} // 10,
               '-nostdin', '-timeout', $o{timeout} // '30s', '-timeout_error',
               '-buff_size', 4194304, '-trace_stat', '-stf', $h{stf},
               '-trace_msg', '-message_file', $h{msgfile},
               '-trace_err', '-error_file', $h{errfile});
    push @cmd, '-s', $o{service} if defined $o{service};
    push @cmd, '-d', $o{d} if defined $o{d};
    push @cmd, map { ('-key', $_, $o{keys}{$_}) } sort keys %{ $o{keys} || {} };
    push @cmd, @{ $o{args} || [] };
    push @cmd, $o{remote} if defined $o{remote};
    $h{cmd} = \@cmd;
    $h{t0} = time;
    my $pid = fork;
    die "fork: $!" unless defined $pid;
    if (!$pid) {
        chdir $dir;
        open(STDIN, '<', '/dev/null');
        open(STDOUT, '>', $h{out});
        open(STDERR, '>&', \*STDOUT);
        { no warnings 'exec'; exec @cmd; }
        POSIX::_exit(127);
    }
    $h{pid} = $pid;
    $SIPP_PIDS{$pid} = 1;
    my $proto = $tr =~ /^t/ ? 'tcp' : 'udp';
    wait_until(5, sub {
        return 1 if _port_bound($port, $proto);
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) {
            delete $SIPP_PIDS{$pid};
            @h{qw(rc done elapsed)} = ($? >> 8, 1, time - $h{t0});
            return 1;
        }
        return 0;
    }, 0.02);
    return \%h;
}

# Wait (up to $timeout s, default 60) for sipp to end; killed after that.
sub rsipp_wait {
    my ($self, $h, $timeout) = @_;
    unless ($h->{done} || $h->{killed}) {
        my $end = time + ($timeout // 60);
        while (1) {
            my $r = waitpid($h->{pid}, POSIX::WNOHANG());
            if ($r == $h->{pid}) {
                delete $SIPP_PIDS{ $h->{pid} };
                @{$h}{qw(rc done elapsed)} = ($? >> 8, 1, time - $h->{t0});
                last;
            }
            if ($r < 0 || time > $end) {
                kill 'KILL', $h->{pid};
                waitpid($h->{pid}, 0);
                delete $SIPP_PIDS{ $h->{pid} };
                @{$h}{qw(rc killed elapsed)} = (-1, 1, time - $h->{t0});
                last;
            }
            sleep 0.05;
        }
    }
    $h->{stats} = _sipp_stats($h->{stf});
    return $h;
}

sub _sipp_stats {
    my ($file) = @_;
    open(my $fh, '<', $file) or return undef;
    my @lines = grep { /\S/ } <$fh>;
    close $fh;
    return undef unless @lines >= 2;
    chomp(my $head = $lines[0]);
    chomp(my $last = $lines[-1]);
    my %s;
    @s{ split /;/, $head } = split /;/, $last;
    return \%s;
}

# sipp ended by itself, exit 0, $o{calls} successful, 0 failed (5 tests).
# The checks, diagnostics and trace parsing are SipTest's; this package only
# starts and waits for its own sipp processes (rsipp_start/rsipp_wait).
sub rsipp_ok {
    my ($self, $h, %o) = @_;
    $self->rsipp_wait($h, $o{timeout});
    $h->{done} //= 0;
    no warnings 'redefine';
    local *SipTest::sipp_wait = sub { };    # already waited for above
    return $self->sipp_ok($h, %o);
}

sub rsipp_diag { my ($self, $h) = @_; return $self->sipp_diag($h) }

# A -trace_msg file as a list of { time, proto, dir (sent|received), msg }.
sub rsipp_trace { return SipTest::sipp_trace(@_) }

# Messages of a trace by dir, method, code, cseq_method; full => trace entries.
sub rsipp_msgs {
    my ($h, %o) = @_;
    my @e = rsipp_trace($h);
    @e = grep { $_->{dir} eq $o{dir} } @e if $o{dir};
    @e = grep { !$_->{msg}->is_response && ($_->{msg}->method // '') eq $o{method} } @e if $o{method};
    @e = grep { $_->{msg}->is_response && $_->{msg}->code == $o{code} } @e if defined $o{code};
    @e = grep { ($_->{msg}->header('cseq') // '') =~ /\s\Q$o{cseq_method}\E\s*$/i } @e if $o{cseq_method};
    return $o{full} ? @e : map { $_->{msg} } @e;
}

sub rsipp_kill_all {
    for my $pid (keys %SIPP_PIDS) {
        if (waitpid($pid, POSIX::WNOHANG()) == 0) {
            kill 'KILL', $pid;
            waitpid($pid, 0);
        }
        delete $SIPP_PIDS{$pid};
    }
}

sub DESTROY {
    my ($self) = @_;
    { local ($?, $@, $!); rsipp_kill_all() if $self->{owner} && $self->{owner} == $$; }
    $self->SUPER::DESTROY();
}

# Runs before SipTest's END (this file is compiled after SipTest.pm).
END { local $?; rsipp_kill_all() }

1;
