#!/usr/bin/perl
# Registrations over TLS are flows (RFC 5626 §5.3, issue 16 item 4): a
# phone registered over a TLS connection is called on that connection
# (its Contact names a port nobody listens on), the dialog's requests come
# back on the caller's TLS connection too when its Contact has ;ob (RFC
# 5626 §5.4; without, her side of the Record-Route names no flow), and once the callee's connection
# closes a caller gets 480 at once (a TLS binding is not dialled back).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(free_port rand_token wait_until response_to);
use SipTls;

SipTls::have_tls_client() or do { fail('IO::Socket::SSL (libio-socket-ssl-perl) installed'); done_testing; exit 1 };

my $tport = free_port();
my $pki;
my $t = SipTest->new(
    start => 0,
    setup => sub { $pki = SipTls::make_pki($_[0]->dir . '/pki') });
$t->{server_conf} = SipTls::modules_conf() . SipTls::status_conf() . SipTls::vhost_conf($pki, $tport, '');
$t->start;
my $nobody = free_port();

sub aor { "sip:$_[0]\@127.0.0.1:$tport" }

sub send_req {
    my ($s, %a) = @_;
    $t->send_raw($s, $t->sip_request(transport => 'TLS', sock => $s, %a));
}

sub next_of {
    my ($s, $want, $timeout) = @_;
    my $end = time + ($timeout // 3);
    while ((my $left = $end - time) > 0) {
        my $m = $t->read_response($s, $left) or return undef;
        return $m if $want->($m);
    }
    return undef;
}
sub next_request { my ($s, $meth) = @_; next_of($s, sub { !$_[0]->is_response && $_[0]->method eq $meth }) }
sub next_final { my ($s, $meth) = @_;
                 next_of($s, sub { $_[0]->is_response && $_[0]->code >= 200 && $_[0]->header('cseq') =~ /$meth/ }) }

my $dave = "sip:dave\@127.0.0.1:$nobody;transport=tls";
my $ds = SipTls::tls_connect($tport, $pki) or BAIL_OUT('no TLS connection');
send_req($ds, method => 'REGISTER', uri => "sip:127.0.0.1:$tport", to => '<' . aor('dave') . '>',
         from => '<' . aor('dave') . '>;tag=d1', headers => [ Contact => "<$dave>", Expires => 600 ]);
my $r = next_final($ds, 'REGISTER');
is($r && $r->code, 200, 'dave registers over TLS');

my $cs = SipTls::tls_connect($tport, $pki) or BAIL_OUT('no TLS connection');
my $caller = "sip:carl\@127.0.0.1:$nobody;transport=tls;ob";
my $cid = rand_token(12) . '@flows-tls';
send_req($cs, method => 'INVITE', uri => aor('dave'), call_id => $cid, from => '<' . aor('carl') . '>;tag=carl1',
         headers => [ Contact => "<$caller>" ]);
my $inv = next_request($ds, 'INVITE');
ok($inv, "carl's INVITE (over another TLS connection) reaches dave on his registration connection");
like($inv ? ($inv->header_elems('via'))[0] : '', qr{^SIP/2\.0/TLS 127\.0\.0\.1:}, '... our Via says TLS');
my @rr = $inv ? $inv->header_elems('record-route') : ();
is(scalar @rr, 2, '... two Record-Route entries, one per flow (carl\'s Contact has ;ob)');
like($rr[0] // '', qr/;transport=tls;flow=[0-9a-f]{16};lr;/, '... the top one names dave\'s flow');
like($rr[1] // '', qr/;transport=tls;flow=[0-9a-f]{16};lr;/, '... the other names carl\'s');
$t->send_raw($ds, response_to($inv, 200, 'OK', tag => 'dave1', rr => 1, contact => $dave)) if $inv;
my $ok = next_final($cs, 'INVITE');
is($ok && $ok->code, 200, 'carl gets the 200 on his connection');
# dave hangs up: his route set is the Record-Route as received
$t->send_raw($ds, "BYE $caller SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:$nobody;branch=z9hG4bK" . rand_token(10)
             . "\r\nRoute: " . join(', ', @rr) . "\r\nMax-Forwards: 70\r\nFrom: " . ($inv ? $inv->header('to') : '')
             . ";tag=dave1\r\nTo: " . ($inv ? $inv->header('from') : '') . "\r\nCall-ID: $cid\r\nCSeq: 3 BYE\r\n"
             . "Content-Length: 0\r\n\r\n");
my $bye = next_request($cs, 'BYE');
ok($bye, "dave's BYE reaches carl on his TLS connection (his Contact is not listening)");
$t->send_raw($cs, response_to($bye, 200, 'OK')) if $bye;
my $bf = next_final($ds, 'BYE');
is($bf && $bf->code, 200, '... and carl\'s 200 reaches dave');

# a TLS caller without ;ob: no flow recorded for it, one Record-Route as before flows
{
    my $cs2 = SipTls::tls_connect($tport, $pki) or BAIL_OUT('no TLS connection');
    send_req($cs2, method => 'INVITE', uri => aor('dave'), from => '<' . aor('cora') . '>;tag=cora1',
             headers => [ Contact => "<sip:cora\@127.0.0.1:$nobody;transport=tls>" ]);
    my $in2 = next_request($ds, 'INVITE');
    my @rr2 = $in2 ? $in2->header_elems('record-route') : ();
    is(scalar @rr2, 2, 'a TLS caller without ;ob: two Record-Routes (one flow, one side without) ...');
    like($rr2[0] // '', qr/;transport=tls;flow=[0-9a-f]{16};lr;/, '... the top one naming dave\'s flow');
    like($rr2[1] // '', qr/^<sip:127\.0\.0\.1:$tport;transport=tls;lr;/, '... the other none: her side is her Contact');
    $t->send_raw($ds, response_to($in2, 486, 'Busy Here', tag => 'dave2')) if $in2;
    my $f2 = next_final($cs2, 'INVITE');
    is($f2 && $f2->code, 486, '... his 486 reaches her');
    close $cs2;
}

close $ds;
sleep 0.3;
my $t0 = time;
send_req($cs, method => 'INVITE', uri => aor('dave'), from => '<' . aor('carl') . '>;tag=carl2',
         headers => [ Contact => "<$caller>" ]);
my $f = next_final($cs, 'INVITE');
my $took = time - $t0;
is($f && $f->code, 480, "dave's TLS connection closed: 480");
cmp_ok($took, '<', 1, sprintf('... at once (%.3f s); a TLS binding is not dialled back', $took));
like($t->_log_tail, qr/dave.*not used: its TLS connection is closed/, '... logged');
my $st = SipTls::status($t);
is($st && $st->{SipFlowsDead}, 1, 'SipFlowsDead: 1');
close $cs;

$t->stop;
done_testing;
