package SipCplTest;
# Helpers for the CPL end-to-end tests (t/cpl-rfc3880.t, t/cpl-upload.t):
# sipp callees on fixed ports per role and transport, CPL scripts from
# t/cpl/ with those addresses filled in, a sipp caller
# (t/sipp/cpl-uac.xml) and one assertion per call of where it ended up.
#
#   my $c = SipCplTest->new(%server_options);   # a SipRegTest server
#   my $uri = $c->uri('vm', 'u1');               # sip:vm@127.0.0.1:P
#   my $xml = $c->cpl('hybrid.cpl', 't1');        # t/cpl/hybrid.cpl for TCP
#   $c->call(label => ..., tr => 'u1', user => 'fwd-u1',
#            uas => { callee => 'proxy-uas-486.xml', vm => 'cgi-uas-answer.xml' },
#            code => 200, at => 'vm', used => ['callee']);
#
# Every sipp is started through SipTest, which kills it by pid at the
# latest when the test ends.

use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use SipTest ();
use SipRegTest;
use SipDigest qw(digest_challenge digest_credentials);
our @ISA = ('SipRegTest');

our @ROLES = qw(callee vm office mobile pager es en);

sub new {
    my ($class, %o) = @_;
    my %ports;
    for my $role (@ROLES) {
        $ports{$role}{$_} = callee_port() for qw(u1 t1);
    }
    my $self = $class->SUPER::new(%o);
    $self->{cpl_ports} = \%ports;
    $self->{cpl_n} = 0;
    return $self;
}

# A port for a sipp callee, kept for the whole test while callees come and
# go on it: below the kernel's ephemeral range (and SipTest::free_port's
# 20000 and up), so no outgoing connection of the server or of sipp takes
# it (or leaves it in TIME_WAIT) between two calls.
my %CALLEE_PORTS;
sub callee_port {
    my ($lo) = (`cat /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null` =~ /^(\d+)/);
    my $top = ($lo // 32768) < 20000 ? $lo : 20000;
    return SipTest::free_port() if $top <= 11000;    # an unusual kernel setting
    for (1 .. 500) {
        my $p = 10000 + int(rand($top - 10000));
        next if $CALLEE_PORTS{$p};
        my $tcp = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $p, Proto => 'tcp',
                                        Listen => 1) or next;
        my $udp = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $p, Proto => 'udp') or next;
        close $tcp;
        close $udp;
        $CALLEE_PORTS{$p} = 1;
        return $p;
    }
    die "SipCplTest: no free port for a callee\n";
}

# The address of the sipp callee playing $role over $tr (u1 or t1).
sub uri {
    my ($self, $role, $tr) = @_;
    my $p = $self->{cpl_ports}{$role}{$tr} // die "no role $role";
    return "sip:$role\@127.0.0.1:$p" . ($tr eq 't1' ? ';transport=tcp' : '');
}

sub port_of { my ($self, $role, $tr) = @_; return $self->{cpl_ports}{$role}{$tr} }

# t/cpl/$file with @URI:role@ replaced by the callees' addresses for $tr
# and the other @NAME@ placeholders from %more.
sub cpl {
    my ($self, $file, $tr, %more) = @_;
    my $path = SipTest::repo() . "/t/cpl/$file";
    open(my $fh, '<', $path) or die "$path: $!";
    local $/;
    my $x = <$fh>;
    $x =~ s/\@URI:(\w+)\@/$self->uri($1, $tr)/ge;
    $x =~ s/\@(\w+)\@/exists $more{$1} ? $more{$1} : die "$file: no value for \@$1\@"/ge;
    return $x;
}

# Write $xml as the administrator script $user@127.0.0.1.cpl in
# SipDirectory.
sub admin_script {
    my ($self, $user, $xml) = @_;
    return $self->write_script("$user\@127.0.0.1.cpl", text => $xml, mode => 0644);
}

# REGISTER $user with @contacts (Expires 600), answering one digest
# challenge with $pw; the final response.
sub register_auth {
    my ($self, $user, $pw, @contacts) = @_;
    my $cid = SipTest::rand_token(12) . '@cpl.test';
    my %a = (user => $user, contacts => [ map { "<$_>" } @contacts ], expires => 600, call_id => $cid);
    my $r = $self->register(%a, cseq => 1);
    if ($r && ($r->code == 401 || $r->code == 407)) {
        my $hdr = $r->code == 401 ? 'www-authenticate' : 'proxy-authenticate';
        my $cred = digest_credentials(challenge => digest_challenge($r, $hdr), user => $user, password => $pw,
                                      method => 'REGISTER', uri => 'sip:127.0.0.1:' . $self->sip_port);
        $r = $self->register(%a, cseq => 2,
                             headers => [ ($r->code == 401 ? 'Authorization' : 'Proxy-Authorization') => $cred ]);
    }
    return $r;
}

# One call from a sipp caller and its sipp callees; where it ends up.
#   label, tr (u1|t1), user (Request-URI user), uri_params,
#   caller (user@host, default alice@127.0.0.1), display, subject, hdr,
#   auth => [user, password] (the caller answers a challenge),
#   uas  => { role => scenario | [scenario, { key => value }] },
#   code => the final status the caller must get,
#   at   => the role whose callee must answer (code 200),
#   contact => role (or URI) that must be among the 3xx's Contacts,
#   reason  => regexp for the final response's reason phrase,
#   uas_pause => the callees' -d (ms, default 100: how long they ring),
#   used => [roles that must see the INVITE and end their scenario (busy,
#            ringing until cancelled, redirecting)];
#   every other callee must see no INVITE at all.
# Returns the final response (SipTest::Msg) the caller got.
sub call {
    my ($self, %c) = @_;
    my $tr = $c{tr};
    my $L = $c{label};
    my $n = ++$self->{cpl_n};
    my $mark = $self->log_mark;
    my %uas;
    for my $role (sort keys %{ $c{uas} || {} }) {
        my ($sf, $keys) = ref $c{uas}{$role} ? @{ $c{uas}{$role} } : ($c{uas}{$role}, undef);
        $uas{$role} = $self->sipp_start(name => "c$n-$role", sf => $sf, transport => $tr,
                                        port => $self->port_of($role, $tr), m => 1,
                                        d => $c{uas_pause} // 100,
                                        timeout => '40s', keys => $keys);
    }
    # the digest uri must be the Request-URI; sipp's default is host:port
    my @auth = $c{auth} ? ('-au', $c{auth}[0], '-ap', $c{auth}[1], '-auth_uri',
                           "$c{user}\@127.0.0.1:" . $self->sip_port . ($c{uri_params} // '')) : ();
    my $uac = $self->sipp_start(
        name => "c$n-uac", sf => 'cpl-uac.xml', transport => $tr, m => 1, timeout => '25s',
        service => $c{user}, remote => '127.0.0.1:' . $self->sip_port, args => \@auth,
        keys => { caller => $c{caller} // 'alice@127.0.0.1', caller_display => $c{display} // '',
                  subject => $c{subject} // 'CPL test call', hdr => $c{hdr} // 'X-Nothing: 1',
                  uri_params => $c{uri_params} // '' });
    $self->sipp_wait($uac, 45);
    my @fin = grep { $_->is_final }
        SipTest::sipp_msgs($uac, dir => 'received', cseq_method => 'INVITE');
    @fin = grep { $_->code != 401 && $_->code != 407 } @fin if $c{auth};
    my $f = $fin[-1];
    my $ok = is($f && $f->code, $c{code}, "$L: the caller gets $c{code}"
                . ($c{at} ? " from $c{at}" : ''));
    $ok = is($uac->{rc}, 0, "$L: the caller's scenario completes") && $ok;
    if ($c{reason}) {
        $ok = like($f ? $f->reason : '', $c{reason}, "$L: reason phrase") && $ok;
    }
    if ($c{contact}) {
        my $want = $c{contact} =~ /^sip:/ ? $c{contact} : $self->uri($c{contact}, $tr);
        my @ct = map { /<([^>]*)>/ ? $1 : $_ } ($f ? $f->header_elems('contact') : ());
        $ok = ok((grep { $_ eq $want } @ct), "$L: Contact $want") && $ok
            or diag('Contacts: ' . join(', ', @ct));
    }
    my %used = map { $_ => 1 } @{ $c{used} || [] };
    $used{ $c{at} } = 1 if $c{at};
    for my $role (sort keys %uas) {
        my $h = $uas{$role};
        if ($used{$role}) {
            # the caller is done: a callee that has no INVITE by now never will
            if (!SipTest::sipp_msgs($h, dir => 'received', method => 'INVITE')) {
                $self->sipp_wait($h, 0.2);
                $ok = fail("$L: $role is called") && $ok;
                next;
            }
            $ok = $self->sipp_ok($h, label => "$L: $role", timeout => 20) && $ok;
        } else {
            # the caller is done: whatever was to reach this callee has
            $self->sipp_wait($h, 0.2) unless $h->{done};
            my @inv = SipTest::sipp_msgs($h, dir => 'received', method => 'INVITE');
            $ok = is(scalar(@inv), 0, "$L: $role is not called") && $ok;
        }
    }
    unless ($ok) {
        $self->sipp_diag($uac);
        $self->sipp_diag($_) for values %uas;
        diag("--- error log during the call:\n" . $self->log_since($mark));
    }
    return $f;
}

1;
