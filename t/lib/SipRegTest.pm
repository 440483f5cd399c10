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
use File::Temp ();
use Time::HiRes qw(time sleep);
use SipTest qw(parse_msg rand_token free_port wait_until);
our @ISA = ('SipTest');

our $SIPP = $ENV{SIPP} || '/usr/bin/sipp';

# ------------------------------------------------------------ SIP helpers

sub aor { my ($self, $user) = @_; return "sip:$user\@127.0.0.1:" . $self->sip_port }

# The home engine of an address-of-record among $n (default 2) engines, as
# sip_engine_home computes it: FNV-1a of the AoR as the registrar names it.
sub engine_home {
    my ($aor, $n) = @_;
    my $h = 2166136261;
    for my $c (unpack 'C*', $aor) { $h = (($h ^ $c) * 16777619) % 4294967296 }
    return $h % ($n // 2);
}

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

# sipp is started, waited for and killed (at stop or exit) by SipTest.
sub rsipp_start { my ($self, %o) = @_; return $self->sipp_start(%o) }
sub rsipp_wait  { my ($self, $h, $timeout) = @_; return $self->sipp_wait($h, $timeout) }

# sipp ended by itself, exit 0, $o{calls} successful, 0 failed (5 tests).
sub rsipp_ok {
    my ($self, $h, %o) = @_;
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

# ------------------------------------------------------------ shared set-ups

# The unprivileged account uploaded scripts run as in the tests (the
# Makefile's TEST_UPLOAD_USER, which its helper is built for); made if
# missing.  Returns (name, uid, gid).
sub upload_user {
    my $name = 'mod-sip-upload';
    unless (defined getpwnam($name)) {
        system('useradd', '--system', '--no-create-home', '--home-dir', '/nonexistent',
               '--shell', '/usr/sbin/nologin', $name) == 0
            or BAIL_OUT("cannot create the test user $name");
    }
    my (undef, undef, $uid, $gid) = getpwnam($name);
    return ($name, $uid, $gid);
}

# A PostgreSQL server of its own on a free loopback port, with database
# "sip" for user "sip" (trust): returns { params (DBDParams), stop => sub }.
# It is stopped (immediately) at exit whatever happens; 4 tests.
my @PG_STOPS;
END { $_->() for @PG_STOPS }
sub postgres_start {
    my ($bindir) = sort { $b cmp $a } glob('/usr/lib/postgresql/*/bin');
    ok($bindir && -x "$bindir/initdb", 'PostgreSQL server binaries installed') or BAIL_OUT('postgresql missing');
    my $pg = File::Temp::tempdir('mod_sip_pg_XXXXXX', TMPDIR => 1, CLEANUP => 1);
    chmod 0755, $pg;
    my @as = ();
    if ($> == 0) {
        my $uid = getpwnam('postgres') // die 'no postgres user';
        chown $uid, -1, $pg;
        @as = ('runuser', '-u', 'postgres', '--');
    }
    my $port = free_port();
    my $run = sub { system(@as, @_) == 0 };
    my $stop = sub {
        $run->("$bindir/pg_ctl", '-D', "$pg/data", '-m', $_[0] // 'immediate', '-w', 'stop')
            if -e "$pg/data/postmaster.pid";
        return !-e "$pg/data/postmaster.pid";
    };
    push @PG_STOPS, $stop;
    ok($run->("$bindir/initdb", '-D', "$pg/data", '--auth=trust', '-U', 'sip', '-E', 'UTF8', '--no-sync'),
       'initdb');
    ok($run->("$bindir/pg_ctl", '-D', "$pg/data", '-l', "$pg/log", '-w', '-t', '30',
              '-o', "-p $port -k $pg -h 127.0.0.1 -c fsync=off", 'start'), "PostgreSQL started on 127.0.0.1:$port");
    ok($run->("$bindir/createdb", '-h', '127.0.0.1', '-p', $port, '-U', 'sip', 'sip'), 'createdb sip');
    return { params => "host=127.0.0.1 port=$port dbname=sip user=sip", stop => $stop,
             bindir => $bindir, port => $port };
}

# One SQL statement on a server of postgres_start, through psql: its rows
# ("a|b" lines, chomped), or undef when psql failed.
sub postgres_sql {
    my ($pg, $sql) = @_;
    open(my $fh, '-|', "$pg->{bindir}/psql", '-X', '-q', '-A', '-t', '-h', '127.0.0.1', '-p', $pg->{port},
         '-U', 'sip', '-d', 'sip', '-c', $sql) or return undef;
    my @rows = <$fh>;
    close($fh) or return undef;
    chomp @rows;
    return wantarray ? @rows : $rows[0];
}

1;
