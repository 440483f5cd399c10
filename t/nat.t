#!/usr/bin/perl
# Phones behind NAT (issue 17 item 3, RFC 3581, RFC 5626 §5.3; docs/nat.md):
#   - a UDP phone whose Contact names 10.0.0.5:5060 but whose REGISTER came
#     from a loopback port gets its INVITE at that port (the Request-URI
#     stays its Contact); one whose Contact names its own address keeps it;
#   - ;ob over UDP: at the source too;
#   - the same phone over TCP: over its connection; once it closed, 480 at
#     once (nothing to dial: the Contact is private, the source port is no
#     server);
#   - SipNatRouting off (the Contact, 127.0.0.2 here) and always (the source
#     even for a Contact that looks reachable);
#   - a restart keeps the source (journal): the NATed UDP phone still gets
#     its calls, the closed TCP one still 480 at once; the same with the
#     mod_dbd store (SQLite), including a table of the older schema.
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;
use File::Temp qw(tempdir);
use SipTest qw(parse_msg rand_token free_port);
use SipRegTest;
use SipNatTest;

my $nobody = free_port();

# A NATed UDP phone: its REGISTER from socket $ph, Contact $contact.
sub reg_udp {
    my ($t, $user, $ph, $contact) = @_;
    return $t->register(user => $user, sock => $ph, contacts => [ "<$contact>" ], expires => 600);
}

# The call to $user reaches UDP socket $ph (and not $not, when given).
sub call_reaches_udp {
    my ($t, $n, $user, $ph, $label, %o) = @_;
    my $call = $n->invite($user);
    my $inv = $n->udp_invite($ph, 3);
    ok($inv, "$label: the INVITE reaches the phone's socket");
    is($inv && $inv->uri, $o{uri}, "$label: Request-URI is the registered Contact") if $o{uri};
    ok(!$t->udp_recv($o{not}, 0.3), "$label: nothing at the other address") if $o{not};
    $n->answer_udp($ph, $inv, 486) if $inv;
    my $fin = $n->final($call);
    is($fin && $fin->code, 486, "$label: the phone's 486 reaches the caller");
}

# The call to $user is answered 480 at once (no timer B).
sub call_480_now {
    my ($t, $n, $user, $label) = @_;
    my $call = $n->invite($user);
    my $fin = $n->final($call, 10);
    is($fin && $fin->code, 480, "$label: 480");
    cmp_ok($call->{secs} // 99, '<', 2, "$label: at once");
}

# ---------------------------------------------------------------- journal
my $t = SipRegTest->new;
my $n = SipNatTest->new($t);

# 1. UDP behind NAT
my $ph = $t->udp_socket;
my $r = reg_udp($t, 'natu', $ph, 'sip:natu@10.0.0.5:5060');
is($r && $r->code, 200, 'natu REGISTERs a 10.0.0.5 Contact from a loopback port: 200');
like(join(',', $r ? $r->headers('contact') : ()), qr/<sip:natu\@10\.0\.0\.5:5060>;expires=/,
     '... the 200 lists the Contact as registered');
call_reaches_udp($t, $n, 'natu', $ph, 'NATed UDP phone', uri => 'sip:natu@10.0.0.5:5060');

# a Contact naming the source address itself (another port: a phone that
# listens elsewhere than it sends from) is used as it is
my $send = $t->udp_socket;
my $listen = $t->udp_socket;
$r = reg_udp($t, 'lan', $send, 'sip:lan@127.0.0.1:' . $listen->sockport);
is($r && $r->code, 200, 'lan REGISTERs a Contact on its own address');
call_reaches_udp($t, $n, 'lan', $listen, 'Contact on the source address', not => $send);

# ;ob over UDP (RFC 5626 §5.3): back to the source whatever the Contact
my $obs = $t->udp_socket;
$r = reg_udp($t, 'obu', $obs, 'sip:obu@192.0.2.10:5060;ob');
is($r && $r->code, 200, 'obu REGISTERs with ;ob over UDP');
call_reaches_udp($t, $n, 'obu', $obs, ';ob over UDP');

# 2. the same over TCP: its connection, then 480 at once
my $c = $t->tcp_connect or die "connect: $!";
$r = $t->register(user => 'natt', transport => 'tcp', sock => $c,
                  contacts => [ '<sip:natt@10.0.0.5:5060;transport=tcp>' ], expires => 600);
is($r && $r->code, 200, 'natt REGISTERs a 10.0.0.5 Contact over TCP');
{
    my $call = $n->invite('natt');
    my $inv = $n->tcp_invite($c, 3);
    ok($inv, 'NATed TCP phone: the INVITE comes over its connection');
    $n->answer_tcp($c, $inv, 486) if $inv;
    my $fin = $n->final($call);
    is($fin && $fin->code, 486, 'NATed TCP phone: its 486 reaches the caller');
}
close $c;
sleep 0.3;
call_480_now($t, $n, 'natt', 'NATed TCP phone after its connection closed');
like($t->error_log, qr/sip:natt\@127\.0\.0\.1 at sip:natt\@10\.0\.0\.5:5060;transport=tcp not used/,
     '... logged as not used');

# 3. restart: the journal keeps the source address
my $c2 = $t->tcp_connect or die;
$r = $t->register(user => 'natj', transport => 'tcp', sock => $c2,
                  contacts => [ '<sip:natj@10.0.0.7:5060;transport=tcp>' ], expires => 600);
is($r && $r->code, 200, 'natj REGISTERs a NATed Contact over TCP');
$t->stop;
close $c2;
$t->start;
call_reaches_udp($t, $n, 'natu', $ph, 'after a restart (journal), the NATed UDP phone');
call_480_now($t, $n, 'natj', 'after a restart, the NATed TCP binding (no flow, private Contact)');
$t->stop;

# ---------------------------------------------------------------- modes
{
    my $off = SipRegTest->new(vhost_conf => 'SipNatRouting off');
    my $no = SipNatTest->new($off);
    my $src = $off->udp_socket;
    my $at = IO::Socket::INET->new(LocalAddr => '127.0.0.2', Proto => 'udp')
        or BAIL_OUT("cannot bind 127.0.0.2: $!");
    my $rr = reg_udp($off, 'offp', $src, 'sip:offp@127.0.0.2:' . $at->sockport);
    is($rr && $rr->code, 200, 'SipNatRouting off: REGISTER a 127.0.0.2 Contact from 127.0.0.1');
    call_reaches_udp($off, $no, 'offp', $at, 'SipNatRouting off: the Contact', not => $src);
    $off->stop;

    my $auto = SipRegTest->new;
    my $na = SipNatTest->new($auto);
    $auto->udp_drain($_) for $at, $src;     # the ACK of the last 486, retransmissions
    $rr = reg_udp($auto, 'autop', $src, 'sip:autop@127.0.0.2:' . $at->sockport);
    call_reaches_udp($auto, $na, 'autop', $src, 'auto: a 127.0.0.2 Contact from 127.0.0.1: the source',
                     not => $at);
    $auto->stop;

    my $always = SipRegTest->new(vhost_conf => 'SipNatRouting always');
    my $nw = SipNatTest->new($always);
    $always->udp_drain($_) for $at, $src;
    my $other = $always->udp_socket;
    $rr = reg_udp($always, 'alw', $src, 'sip:alw@127.0.0.1:' . $other->sockport);
    call_reaches_udp($always, $nw, 'alw', $src, 'SipNatRouting always: the source, not the Contact',
                     not => $other);
    $always->stop;
}

# ---------------------------------------------------------------- mod_dbd
my $MODDIR = '/usr/lib/apache2/modules';
{
    ok(-e "$MODDIR/mod_dbd.so" && -x '/usr/bin/sqlite3', 'mod_dbd and sqlite3 are installed')
        or BAIL_OUT('mod_dbd or sqlite3 missing');
    my $dbdir = tempdir('mod_sip_nat_XXXXXX', TMPDIR => 1, CLEANUP => 1);
    chmod 0777, $dbdir;
    my $db = "$dbdir/location.db";
    # a table as the store made it before issue 17, with a binding in it
    my $exp = int((time + 600) * 1e6);
    system('/usr/bin/sqlite3', $db,
           "CREATE TABLE sip_location (aor VARCHAR(255) NOT NULL, contact VARCHAR(1024) NOT NULL, "
           . "params VARCHAR(1024) NOT NULL DEFAULT '', call_id VARCHAR(255) NOT NULL, "
           . "cseq BIGINT NOT NULL, expires BIGINT NOT NULL, q INTEGER NOT NULL, "
           . "path VARCHAR(2048), display VARCHAR(1024) NOT NULL DEFAULT '', "
           . "transport VARCHAR(8) NOT NULL DEFAULT '', PRIMARY KEY (aor, contact));"
           . "INSERT INTO sip_location VALUES ('sip:old\@127.0.0.1', '', '', '', 0, 0, 0, '', '', '');"
           . "INSERT INTO sip_location VALUES ('sip:old\@127.0.0.1', 'sip:old\@127.0.0.1:5097', '', "
           . "'c1', 1, $exp, 1000, '', '', '');") == 0 or BAIL_OUT('sqlite3 failed');
    chmod 0666, $db;
    my $d = SipRegTest->new(server_conf => "LoadModule dbd_module $MODDIR/mod_dbd.so\n"
                            . "DBDriver sqlite3\nDBDParams \"$db\"\nSipLocation dbd\n");
    my $nd = SipNatTest->new($d);
    my ($f, %b) = $d->fetch('old');
    ok($b{'sip:old@127.0.0.1:5097'}, 'dbd: a binding of the older table is still there');
    like($d->error_log, qr/brought to the issue 17 schema/, 'dbd: the older table was migrated');
    my $dph = $d->udp_socket;
    $r = reg_udp($d, 'natd', $dph, 'sip:natd@10.0.0.5:5060');
    is($r && $r->code, 200, 'dbd: natd REGISTERs a NATed Contact over UDP');
    call_reaches_udp($d, $nd, 'natd', $dph, 'dbd: the NATed UDP phone');
    my $dc = $d->tcp_connect or die;
    $r = $d->register(user => 'natdt', transport => 'tcp', sock => $dc,
                      contacts => [ '<sip:natdt@10.0.0.8:5060;transport=tcp>' ], expires => 600);
    is($r && $r->code, 200, 'dbd: natdt REGISTERs a NATed Contact over TCP');
    $d->stop;
    close $dc;
    $d->start;
    call_reaches_udp($d, $nd, 'natd', $dph, 'dbd: after a restart, the NATed UDP phone');
    call_480_now($d, $nd, 'natdt', 'dbd: after a restart, the NATed TCP binding');
    my $cols = `/usr/bin/sqlite3 $db "SELECT received FROM sip_location WHERE aor = 'sip:natd\@127.0.0.1'"`;
    like($cols, qr/^127\.0\.0\.1:\d+$/m, 'dbd: the received column holds the source');
    $d->stop;
}

done_testing();
