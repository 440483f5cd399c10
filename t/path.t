#!/usr/bin/perl
# Path (RFC 3327; issue 17 item 4; docs/nat.md), with a Perl "edge proxy"
# on a UDP socket that forwards a phone's REGISTER adding its Path:
#   - the 200 echoes the Path values to a UA that said Supported: path
#     (§5.3); a REGISTER with Path from a UA that did not say so is refused
#     with 420, or accepted without the echo under SipPathUnsupported accept;
#   - a call to the user goes to the first Path hop with the Path values as
#     its Route set (§5.4), Request-URI the Contact, although that Contact
#     is a private address (the edge proxy handles the NAT);
#   - two Path values (two proxies) become two Route values in order;
#   - an engine restart keeps the Path (journal).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(parse_msg rand_token);
use SipRegTest;
use SipNatTest;

my $t = SipRegTest->new;
my $n = SipNatTest->new($t);
my $port = $t->sip_port;

my $edge = $t->udp_socket;
my $ep = $edge->sockport;
my $EDGE = "<sip:127.0.0.1:$ep;lr>";

# A REGISTER as the edge proxy forwards it: its Via on top of the phone's,
# its Path, from its socket.  Returns the final response.
sub reg_via_edge {
    my ($tt, $user, $contact, %o) = @_;
    my $aor = '<' . $tt->aor($user) . '>';
    my $raw = $tt->sip_request(method => 'REGISTER', uri => 'sip:127.0.0.1:' . $tt->sip_port, sock => $edge,
                               to => $aor, from => "$aor;tag=" . rand_token(6),
                               headers => [ Via => 'SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bK' . rand_token(10),
                                            (map { (Path => $_) } @{ $o{path} // [ $EDGE ] }),
                                            Contact => "<$contact>", Expires => 600,
                                            ($o{supported} ? (Supported => $o{supported}) : ()),
                                            ($o{require} ? (Require => $o{require}) : ()) ]);
    my ($fin) = grep { $_->code >= 200 } $tt->udp_req($raw, 3, sock => $edge);
    return $fin;
}

# A call to $user arrives at the edge: the INVITE (answered 486 there).
sub call_at_edge {
    my ($tt, $nn, $user, $label) = @_;
    my $call = $nn->invite($user);
    my $inv = $nn->udp_invite($edge, 3);
    ok($inv, "$label: the INVITE goes to the Path hop");
    $nn->answer_udp($edge, $inv, 486) if $inv;
    my $fin = $nn->final($call);
    is($fin && $fin->code, 486, "$label: the 486 from there reaches the caller");
    return $inv;
}

# ---- 1. Supported: path: stored, echoed, used
my $r = reg_via_edge($t, 'pth', 'sip:pth@10.1.1.1:5060', supported => 'path');
is($r && $r->code, 200, 'a REGISTER through an edge proxy with Path and Supported: path: 200');
is($r && $r->header('path'), $EDGE, '... the 200 echoes the Path (RFC 3327 §5.3)');
my $inv = call_at_edge($t, $n, 'pth', 'pth');
is($inv && $inv->uri, 'sip:pth@10.1.1.1:5060', '... Request-URI: the registered Contact');
is(join(', ', $inv ? $inv->header_elems('route') : ()), $EDGE, '... Route: the Path value');

# ---- 2. two Path values: two Route values, in order
my $P2 = '<sip:192.0.2.77:5060;lr>';
$r = reg_via_edge($t, 'pth2', 'sip:pth2@10.1.1.2:5060', supported => 'path, outbound', path => [ $EDGE, $P2 ]);
is($r && $r->code, 200, 'two Path headers: 200');
is(join(', ', $r ? $r->header_elems('path') : ()), "$EDGE, $P2", '... both echoed in order');
$inv = call_at_edge($t, $n, 'pth2', 'pth2');
is(join(', ', $inv ? $inv->header_elems('route') : ()), "$EDGE, $P2", '... Route: both, in order');

# an edge proxy that requires Path of the registrar (RFC 3327 §5.2)
$r = reg_via_edge($t, 'req', 'sip:req@10.1.1.5:5060', supported => 'path', require => 'path');
is($r && $r->code, 200, 'Require: path from the edge proxy: 200 (the registrar supports it)');

# ---- 3. no Supported: path: 420
$r = reg_via_edge($t, 'nopath', 'sip:nopath@10.1.1.3:5060');
is($r && $r->code, 420, 'Path from a UA without Supported: path: 420 (RFC 3327 §5.3)');
is($r && $r->header('unsupported'), 'path', '... Unsupported: path');
my $m = $t->request_to('nopath');
is($m && $m->code, 404, '... nothing stored');

# ---- 4. restart: the Path is kept
$t->stop;
$t->start;
call_at_edge($t, $n, 'pth', 'after a restart (journal), pth');
$t->stop;

# ---- 5. SipPathUnsupported accept
{
    my $acc = SipRegTest->new(vhost_conf => 'SipPathUnsupported accept');
    my $na = SipNatTest->new($acc);
    $acc->udp_drain($edge);
    my $ra = reg_via_edge($acc, 'lazy', 'sip:lazy@10.1.1.4:5060');
    is($ra && $ra->code, 200, 'SipPathUnsupported accept: 200');
    ok($ra && !$ra->header('path'), '... without the Path echoed (the UA did not ask for it)');
    call_at_edge($acc, $na, 'lazy', 'SipPathUnsupported accept');
    $acc->stop;
}

done_testing();
