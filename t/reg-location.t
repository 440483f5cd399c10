#!/usr/bin/perl
# SipMode per user with <Location "/user@domain"> (the synthetic path a SIP
# request gets): one user redirected, the others proxied.
use strict;
use warnings;
use Test::More;
use IO::Socket::INET;
use SipTest qw(parse_msg);
use SipRegTest;

my $t = SipRegTest->new(server_conf => qq{<Location "/carl\@127.0.0.1">\n    SipMode redirect\n</Location>\n});

# a UAS that answers every INVITE with 486
my $uas = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'udp') or die $!;
my $uport = $uas->sockport;
for my $u (qw(carl dora)) {
    my $r = $t->register(user => $u, contacts => [ "<sip:$u\@127.0.0.1:$uport>" ], expires => 600);
    is($r && $r->code, 200, "$u registered");
}

my $m = $t->request_to('carl', method => 'INVITE');
is($m && $m->code, 302, '<Location "/carl@127.0.0.1"> SipMode redirect -> 302');
like(($m ? $m->header('contact') : '') // '', qr{^<sip:carl\@127\.0\.0\.1:$uport>}, '... to carl\'s binding');

# dora: the vhost default (proxy): the INVITE reaches the UAS, whose 486 comes back
my $pid = fork // die;
if (!$pid) {
    $uas->blocking(1);
    my $buf;
    local $SIG{ALRM} = sub { POSIX::_exit(1) };
    alarm 10;
    while (defined $uas->recv($buf, 65535)) {
        next unless $buf =~ /^INVITE /;
        my @v = ($buf =~ /^(Via:[^\r\n]*)/mig);
        my ($f) = $buf =~ /^(From:[^\r\n]*)/mi;
        my ($to) = $buf =~ /^(To:[^\r\n]*)/mi;
        my ($c) = $buf =~ /^(Call-ID:[^\r\n]*)/mi;
        my ($cs) = $buf =~ /^(CSeq:[^\r\n]*)/mi;
        my $resp = join("\r\n", 'SIP/2.0 486 Busy Here', @v, $f, "$to;tag=uas1", $c, $cs, 'Content-Length: 0', '', '');
        $uas->send($resp);
        # absorb the proxy's ACK
        $uas->recv($buf, 65535);
        POSIX::_exit($buf =~ /^ACK / ? 0 : 2);
    }
    POSIX::_exit(3);
}
$m = $t->request_to('dora', method => 'INVITE', timeout => 8);
is($m && $m->code, 486, 'dora (vhost default SipMode proxy) -> proxied, the UAS\'s 486 comes back');
waitpid($pid, 0);
is($? >> 8, 0, 'the UAS got the INVITE through the proxy and the proxy\'s ACK');

done_testing;
