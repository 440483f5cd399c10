#!/usr/bin/perl
# RFC 5626 outbound at the registrar (issue 17 item 3; docs/nat.md):
#   - a REGISTER with +sip.instance, reg-id and Supported: outbound gets
#     Require: outbound and Flow-Timer in its 200 (§6, §4.4.1); without
#     Supported: outbound, no Require; a reg-id without an instance is
#     ignored; through a proxy without Path ;ob: 439 (or the reg-id ignored
#     when the UA did not ask for outbound); through an edge proxy whose
#     Path has ;ob outbound applies;
#   - one instance with two reg-id flows over two TCP connections kept alive
#     with CRLF pings (answered): a call goes to ONE flow, the latest;
#     closing it, the next call takes the other; closing both: 480 at once;
#   - two instances: one INVITE each;
#   - a re-REGISTER with the same instance and reg-id and a new Contact
#     replaces the binding (§6), another reg-id adds one;
#   - an engine restart keeps instance and reg-id (journal, and the mod_dbd
#     store, where two flows share one Contact URI): the flows are gone, so
#     the bindings are known but not dialled (480 at once);
#   - SipFlowTimer sets Flow-Timer; the default over UDP.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use File::Temp ();
use SipTest qw(parse_msg rand_token);
use SipRegTest;
use SipNatTest;

my $t = SipRegTest->new;
my $n = SipNatTest->new($t);
my $port = $t->sip_port;
my $SUP = [ Supported => 'path, outbound' ];

sub ob_contact {
    my ($user, $inst, $rid, $host) = @_;
    return "<sip:$user\@" . ($host // '10.0.0.5:5060') . ";transport=tcp;ob>;+sip.instance=\"<urn:uuid:$inst>\""
        . (defined $rid ? ";reg-id=$rid" : '');
}

# REGISTER over TCP connection $c (opened when undef): ($c, response).
sub reg_flow {
    my ($user, $contact, %o) = @_;
    my $c = $o{conn} // $t->tcp_connect or die "connect: $!";
    my $r = $t->register(user => $user, transport => 'tcp', sock => $c, contacts => [ $contact ],
                         expires => $o{expires} // 600, headers => $o{headers} // $SUP,
                         call_id => $o{call_id});
    return ($c, $r);
}

sub contacts_of {
    my ($user) = @_;
    my $r = $t->register(user => $user);
    return $r ? $r->header_elems('contact') : ();
}

# ---- 1. the 200: Require: outbound, Flow-Timer
my ($c1, $r) = reg_flow('ob', ob_contact('ob', 'aaaa-1', 1));
is($r && $r->code, 200, 'flow 1 (reg-id 1) REGISTERs over TCP: 200');
is($r && $r->header('require'), 'outbound', '... Require: outbound (RFC 5626 §6)');
is($r && $r->header('flow-timer'), '120', '... Flow-Timer: 120 (the default over a connection)');
like(join(',', $r ? $r->header_elems('contact') : ()), qr/\+sip\.instance="<urn:uuid:aaaa-1>";reg-id=1;expires=\d+/,
     '... the Contact with its instance and reg-id');
sleep 1.1;      # flow 2 refreshed later than flow 1
my ($c2, $r2) = reg_flow('ob', ob_contact('ob', 'aaaa-1', 2));
is($r2 && $r2->code, 200, 'flow 2 (reg-id 2, the same Contact) over a second connection: 200');
my @cs = contacts_of('ob');
is(scalar @cs, 2, 'two bindings: one per reg-id, though the Contact URI is the same');

# CRLF keep-alives (RFC 5626 §4.4.1) on both flows are answered
for (1 .. 3) {
    $t->send_raw($_, "\r\n\r\n") for $c1, $c2;
    sleep 0.2;
}
for my $c ($c1, $c2) {
    $t->read_response($c, 0.3);
}
ok((${*$c1}{siptest_pongs} // 0) >= 1 && (${*$c2}{siptest_pongs} // 0) >= 1,
   'CRLF pings on both flows get CRLF pongs');

# ---- 2. one target per instance: the latest flow, then the other
{
    my $call = $n->invite('ob');
    my $inv = $n->tcp_invite($c2, 3);
    ok($inv, 'a call to ob reaches the latest flow (reg-id 2)');
    ok(!$n->tcp_invite($c1, 0.5), '... and not flow 1 as well (RFC 5626 §7: one flow per instance)');
    $n->answer_tcp($c2, $inv, 486) if $inv;
    my $fin = $n->final($call);
    is($fin && $fin->code, 486, '... its 486 reaches the caller');
}
close $c2;
sleep 0.3;
{
    my $call = $n->invite('ob');
    my $inv = $n->tcp_invite($c1, 3);
    ok($inv, 'flow 2 closed: the next call goes to flow 1');
    $n->answer_tcp($c1, $inv, 486) if $inv;
    my $fin = $n->final($call);
    is($fin && $fin->code, 486, '... its 486 reaches the caller');
}
close $c1;
sleep 0.3;
{
    my $call = $n->invite('ob');
    my $fin = $n->final($call, 10);
    is($fin && $fin->code, 480, 'both flows closed: 480');
    cmp_ok($call->{secs} // 99, '<', 2, '... at once');
}

# ---- 3. two instances: one INVITE each
{
    my ($a, $ra) = reg_flow('duo', ob_contact('duo', 'inst-a', 1));
    my ($b, $rb) = reg_flow('duo', ob_contact('duo', 'inst-b', 1, '10.0.0.6:5060'));
    ok($ra && $ra->code == 200 && $rb && $rb->code == 200, 'duo: two instances REGISTER');
    my $call = $n->invite('duo');
    my $ia = $n->tcp_invite($a, 3);
    my $ib = $n->tcp_invite($b, 3);
    ok($ia && $ib, 'duo: the call forks to both instances');
    $n->answer_tcp($a, $ia, 486) if $ia;
    $n->answer_tcp($b, $ib, 486) if $ib;
    my $fin = $n->final($call);
    is($fin && $fin->code, 486, 'duo: the caller gets 486');
    close $a;
    close $b;
}

# ---- 4. same instance and reg-id, new Contact: replaced; reg-id identity
{
    my ($a, $ra) = reg_flow('rep', ob_contact('rep', 'r-1', 1, '10.0.0.5:5060'));
    is($ra && $ra->code, 200, 'rep: REGISTER reg-id 1 at 10.0.0.5');
    my ($b, $rb) = reg_flow('rep', ob_contact('rep', 'r-1', 1, '10.0.0.9:5070'));
    is($rb && $rb->code, 200, 'rep: the same instance and reg-id with another Contact');
    my @now = contacts_of('rep');
    is(scalar @now, 1, 'rep: one binding: replaced (RFC 5626 §6)');
    like($now[0] // '', qr/10\.0\.0\.9:5070/, 'rep: the new Contact');
    my $call = $n->invite('rep');
    ok($n->tcp_invite($b, 3), 'rep: the call goes over the new flow');
    ok(!$n->tcp_invite($a, 0.5), 'rep: not over the replaced one');
    $n->final($call, 0.1);
    # removing it by its name (expires 0) with yet another Contact
    my ($x, $rx) = reg_flow('rep', ob_contact('rep', 'r-1', 1, '10.0.0.1:1'), conn => $b, expires => 0);
    is($rx && $rx->code, 200, 'rep: expires 0 for (instance, reg-id 1)');
    is(scalar(contacts_of('rep')), 0, 'rep: no binding left');
    close $a;
    close $b;
}

# ---- 5. when outbound does not apply
{
    my ($c, $rr) = reg_flow('noob', ob_contact('noob', 'n-1', 1), headers => [ Supported => 'path' ]);
    is($rr && $rr->code, 200, 'reg-id without Supported: outbound: 200');
    ok($rr && !$rr->header('require'), '... no Require: outbound');
    ($c, $rr) = reg_flow('noinst', '<sip:noinst@10.0.0.5:5060;transport=tcp>;reg-id=1', conn => $c);
    is($rr && $rr->code, 200, 'reg-id without +sip.instance: 200');
    ok($rr && !$rr->header('require'), '... ignored: no Require: outbound');
    close $c;

    # through a proxy: a second Via, no Path ;ob
    my $via2 = [ Via => 'SIP/2.0/UDP 192.0.2.50:5060;branch=z9hG4bK' . rand_token(10) ];
    my $u = $t->udp_socket;
    my $raw = $t->sip_request(method => 'REGISTER', uri => "sip:127.0.0.1:$port", sock => $u,
                              to => '<' . $t->aor('prox') . '>', from => '<' . $t->aor('prox') . '>;tag=p1',
                              headers => [ @$via2, Contact => ob_contact('prox', 'p-1', 1),
                                           Expires => 600, Supported => 'path, outbound' ]);
    my @resp = $t->udp_req($raw, 3, sock => $u);
    my ($fin) = grep { $_->code >= 200 } @resp;
    is($fin && $fin->code, 439, 'through a proxy without Path ;ob, asking for outbound: 439 (RFC 5626 §6)');
    like($fin ? $fin->reason : '', qr/First Hop Lacks Outbound Support/, '... First Hop Lacks Outbound Support');

    $raw = $t->sip_request(method => 'REGISTER', uri => "sip:127.0.0.1:$port", sock => $u,
                           to => '<' . $t->aor('prox') . '>', from => '<' . $t->aor('prox') . '>;tag=p2',
                           headers => [ @$via2, Contact => ob_contact('prox', 'p-1', 1),
                                        Expires => 600, Supported => 'path' ]);
    ($fin) = grep { $_->code >= 200 } $t->udp_req($raw, 3, sock => $u);
    is($fin && $fin->code, 200, 'the same without Supported: outbound: 200, reg-id ignored');

    $raw = $t->sip_request(method => 'REGISTER', uri => "sip:127.0.0.1:$port", sock => $u,
                           to => '<' . $t->aor('edge') . '>', from => '<' . $t->aor('edge') . '>;tag=p3',
                           headers => [ @$via2, Path => '<sip:192.0.2.50:5060;lr;ob>',
                                        Contact => ob_contact('edge', 'e-1', 1),
                                        Expires => 600, Supported => 'path, outbound' ]);
    ($fin) = grep { $_->code >= 200 } $t->udp_req($raw, 3, sock => $u);
    is($fin && $fin->code, 200, 'through an edge proxy whose Path has ;ob: 200');
    is($fin && $fin->header('require'), 'outbound', '... with Require: outbound');
    is($fin && $fin->header('path'), '<sip:192.0.2.50:5060;lr;ob>', '... and the Path echoed');
    is($fin && $fin->header('flow-timer'), '25', '... Flow-Timer 25 over UDP (the default)');
}

# ---- 6. a restart keeps instance and reg-id (journal)
{
    my ($c, $rr) = reg_flow('keep', ob_contact('keep', 'k-1', 3, '192.0.2.44:5060'));
    is($rr && $rr->code, 200, 'keep: outbound REGISTER with a public-looking Contact');
    $t->stop;
    close $c;
    $t->start;
    my @now = contacts_of('keep');
    like($now[0] // '', qr/\+sip\.instance="<urn:uuid:k-1>";reg-id=3/, 'keep: after a restart the binding is there');
    my $call = $n->invite('keep');
    my $fin = $n->final($call, 10);
    is($fin && $fin->code, 480, 'keep: its flow is gone and an outbound Contact is never dialled: 480');
    cmp_ok($call->{secs} // 99, '<', 2, 'keep: at once');
}
$t->stop;

# ---- 6b. the same with the mod_dbd store (SQLite)
{
    my $MODDIR = '/usr/lib/apache2/modules';
    ok(-e "$MODDIR/mod_dbd.so", 'mod_dbd is installed') or BAIL_OUT('mod_dbd missing');
    my $dbdir = File::Temp::tempdir('mod_sip_ob_XXXXXX', TMPDIR => 1, CLEANUP => 1);
    chmod 0777, $dbdir;
    my $d = SipRegTest->new(server_conf => "LoadModule dbd_module $MODDIR/mod_dbd.so\n"
                            . "DBDriver sqlite3\nDBDParams \"$dbdir/location.db\"\nSipLocation dbd\n");
    my $nd = SipNatTest->new($d);
    my @c;
    for my $rid (1, 2) {
        my $c = $d->tcp_connect or die;
        my $rr = $d->register(user => 'dbk', transport => 'tcp', sock => $c, expires => 600, headers => $SUP,
                              contacts => [ ob_contact('dbk', 'd-1', $rid, '192.0.2.45:5060') ]);
        is($rr && $rr->code, 200, "dbd: flow $rid of one instance (the same Contact URI)");
        push @c, $c;
    }
    my $rr = $d->register(user => 'dbk');
    is(scalar($rr ? $rr->header_elems('contact') : ()), 2, 'dbd: two bindings, one per reg-id');
    my $call = $nd->invite('dbk');
    ok($nd->tcp_invite($c[1], 3), 'dbd: the call goes to the latest flow');
    ok(!$nd->tcp_invite($c[0], 0.5), 'dbd: and not to the other');
    $nd->final($call, 0.1);
    $d->stop;
    close $_ for @c;
    $d->start;
    $rr = $d->register(user => 'dbk');
    my @now = $rr ? $rr->header_elems('contact') : ();
    is(scalar @now, 2, 'dbd: after a restart both bindings are there');
    like(join(',', @now), qr/reg-id=1.*reg-id=2|reg-id=2.*reg-id=1/, 'dbd: with their reg-ids');
    $call = $nd->invite('dbk');
    my $fin = $nd->final($call, 10);
    is($fin && $fin->code, 480, 'dbd: flows gone, outbound Contacts never dialled: 480');
    cmp_ok($call->{secs} // 99, '<', 2, 'dbd: at once');
    $d->stop;
}

# ---- 7. SipFlowTimer
{
    my $ft = SipRegTest->new(vhost_conf => 'SipFlowTimer 42');
    my $c = $ft->tcp_connect or die;
    my $rr = $ft->register(user => 'ft', transport => 'tcp', sock => $c, contacts => [ ob_contact('ft', 'f-1', 1) ],
                           expires => 600, headers => $SUP);
    is($rr && $rr->header('flow-timer'), '42', 'SipFlowTimer 42: Flow-Timer: 42');
    close $c;
    $ft->stop;
}

done_testing();
