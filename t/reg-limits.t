#!/usr/bin/perl
# Registrar limits and hostile REGISTERs (docs/security.md):
#   * SipMaxContacts (default 10): a REGISTER that would leave an AoR with
#     more bindings gets 403 Too Many Contacts with a Warning, nothing is
#     stored, a log line says why; refreshes and remove+add stay allowed;
#     one 12 000-contact REGISTER over TCP is refused at once and the
#     server keeps answering;
#   * SipMaxBindings (server-wide): the store full -> 503 + Retry-After;
#   * SipMaxBranches: a request to an AoR with more bindings forks to the
#     best N only (the others get nothing);
#   * a 200 over UDP never exceeds a datagram of 1300 bytes (RFC 3261
#     §18.1.1): the Contact list is cut, with a Warning, the contacts of the
#     REGISTER itself first;
#   * q must be an RFC 3261 qvalue (q=nan, 2, 1.5, -1, 0.1234 -> 400);
#   * a quoted parameter or display name holding a TAB survives restarts;
#   * journal replay: 100 000 bindings (one AoR with 12 000, from before
#     the limit) replay fast; an expiry beyond SipMaxExpires is cut; an
#     unreadable line is skipped and logged; a version 1 journal is read
#     and rewritten as the current version (3).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;
use IO::Select;
use POSIX ();
use SipTest qw(rand_token wait_until parse_msg);
use SipRegTest;

*bindings_are = \&SipRegTest::bindings_are;
*binding_map  = \&SipRegTest::binding_map;

sub contacts_n { my ($user, $n, $from) = @_; $from //= 0;
                 return join(', ', map { "<sip:$user$_\@127.0.0.1:" . (7000 + $_) . '>' } $from .. $from + $n - 1) }

sub restart_engine_by_kill {
    my ($t, $label) = @_;
    my $old = $t->engine_pid;
    kill 'KILL', $old if $old;
    my $new = wait_until(10, sub { my $p = $t->engine_pid; $p && $p != ($old // 0) ? $p : 0 }, 0.05);
    ok($new && wait_until(5, sub { $t->options_ok('udp') }, 0.1), "$label: engine restarted after kill -9 and answering");
}

# ================================================================ A: per-AoR limit (defaults)
my $t = SipRegTest->new;
my $port = $t->sip_port;

{
    my $cid = rand_token(12) . '@ten';
    my $r = $t->register(user => 'ten', call_id => $cid, cseq => 1, expires => 600,
                         contacts => [ contacts_n('ten', 10) ]);
    is($r && $r->code, 200, 'SipMaxContacts default 10: ten contacts in one REGISTER -> 200');
    is(scalar(keys %{ { binding_map($r) } }), 10, '... all ten listed');

    my $mark = $t->log_mark;
    $r = $t->register(user => 'ten', call_id => rand_token(12) . '@eleventh', cseq => 1, expires => 600,
                      contacts => [ '<sip:ten-extra@127.0.0.1:7100>' ]);
    is($r && $r->code, 403, 'an eleventh contact (another Call-ID) -> 403');
    is($r && $r->reason, 'Too Many Contacts', '... reason phrase Too Many Contacts');
    like($r && $r->header('warning') // '', qr/^399 \S+ "Too many contacts: at most 10 per address-of-record"$/,
         '... Warning 399 says at most 10 per address-of-record');
    ok($t->wait_log($mark, qr/403 Too Many Contacts for REGISTER .*SipMaxContacts 10.*nothing stored/),
       '... and an info log line says why');
    my ($f, %b) = $t->fetch('ten');
    is(scalar(keys %b), 10, '... nothing stored: still ten bindings');
    ok(!$b{'sip:ten-extra@127.0.0.1:7100'}, '... and not the eleventh');

    $r = $t->register(user => 'ten', call_id => $cid, cseq => 2, expires => 900, contacts => [ contacts_n('ten', 10) ]);
    is($r && $r->code, 200, 'refreshing all ten at the limit -> 200');
    ok(!grep({ ($_->{expires} // 0) < 890 } values %{ { binding_map($r) } }), '... all refreshed to 900 s')
        or diag(SipRegTest::dump_contacts($r));

    $r = $t->register(user => 'ten', call_id => $cid, cseq => 3,
                      contacts => [ '<sip:ten0@127.0.0.1:7000>;expires=0', '<sip:ten-new@127.0.0.1:7101>;expires=600' ]);
    is($r && $r->code, 200, 'removing one and adding one in the same REGISTER at the limit -> 200');
    %b = binding_map($r);
    ok(scalar(keys %b) == 10 && $b{'sip:ten-new@127.0.0.1:7101'} && !$b{'sip:ten0@127.0.0.1:7000'},
       '... ten bindings, the new one in, the removed one out') or diag(SipRegTest::dump_contacts($r));

    # the same contact spelled differently is one binding (RFC 3261 §19.1.4)
    $r = $t->register(user => 'ten', call_id => $cid, cseq => 4, expires => 700,
                      contacts => [ '<SIP:ten1@127.0.0.1:7001>', '<sip:ten2@127.0.0.1:7002;foo=bar>' ]);
    is($r && $r->code, 200, 'refresh with other spellings of two bound URIs (scheme case, extra parameter) -> 200, not 403');
    is(scalar(keys %{ { binding_map($r) } }), 10, '... still ten bindings');

    $r = $t->register(user => 'eleven', expires => 600, contacts => [ contacts_n('eleven', 11) ]);
    is($r && $r->code, 403, 'eleven contacts in one REGISTER for a new AoR -> 403');
    ($f, %b) = $t->fetch('eleven');
    is(scalar(keys %b), 0, '... none of them stored');
    $r = $t->request_to('eleven');
    is($r && $r->code, 404, '... the AoR is still unknown (404)');

    # the attack of the issue: 12 000 contacts in one REGISTER over TCP
    my @hdrs;
    for (my $i = 0; $i < 12000; $i += 200) { push @hdrs, contacts_n('flood', 200, $i) }
    my $t0 = time;
    $r = $t->register(user => 'flood', transport => 'tcp', expires => 600, contacts => \@hdrs, timeout => 20);
    my $took = time - $t0;
    is($r && $r->code, 403, sprintf('12 000 contacts in one REGISTER over TCP (%d bytes) -> 403', length(join ', ', @hdrs)));
    cmp_ok($took, '<', 3, sprintf('... answered in %.2f s', $took));
    note(sprintf('12 000-contact REGISTER refused in %.3f s', $took));
    $t0 = time;
    ok($t->options_ok('udp'), 'OPTIONS right after it -> 200');
    cmp_ok(time - $t0, '<', 0.5, sprintf('... in %.3f s (the engine did not stall)', time - $t0));
    ($f, %b) = $t->fetch('flood', transport => 'tcp');
    is(scalar(keys %b), 0, '... nothing stored for that AoR');

    # a REGISTER storing SipMaxContacts contacts: timed
    $t0 = time;
    $r = $t->register(user => 'timed', expires => 600, contacts => [ contacts_n('timed', 10) ]);
    my $ten_took = time - $t0;
    is($r && $r->code, 200, sprintf('REGISTER storing 10 contacts -> 200 in %.1f ms', 1000 * $ten_took));
    note(sprintf('REGISTER storing 10 contacts: %.1f ms round trip', 1000 * $ten_took));
}

# ---------------------------------------------------------------- q values
{
    for my $q (qw(nan NaN inf 2 1.5 1.001 -1 -0 0.1234 .5 abc), '') {
        my $r = $t->register(user => 'qbad', expires => 600, contacts => [ "<sip:qbad\@127.0.0.1:7200>;q=$q" ]);
        is($r && $r->code, 400, "q=$q -> 400");
    }
    my ($f, %b) = $t->fetch('qbad');
    is(scalar(keys %b), 0, 'nothing stored for the invalid q values');
    my $r = $t->register(user => 'qgood', expires => 600,
                         contacts => [ '<sip:q1@127.0.0.1:7201>;q=0.125', '<sip:q2@127.0.0.1:7202>;q=1.000',
                                       '<sip:q3@127.0.0.1:7203>;q=0', '<sip:q4@127.0.0.1:7204>;q=0.', '<sip:q5@127.0.0.1:7205>;Q=0.5' ]);
    is($r && $r->code, 200, 'q=0.125, 1.000, 0, 0. and Q=0.5 are qvalues -> 200');
    bindings_are({ binding_map($r) }, {
        'sip:q1@127.0.0.1:7201' => [ 590, 600, '0.125' ], 'sip:q2@127.0.0.1:7202' => [ 590, 600, '1' ],
        'sip:q3@127.0.0.1:7203' => [ 590, 600, '0' ],     'sip:q4@127.0.0.1:7204' => [ 590, 600, '0' ],
        'sip:q5@127.0.0.1:7205' => [ 590, 600, '0.5' ],
    }, '... stored with those q', $r);
}

# ---------------------------------------------------------------- UDP response size
{
    my $long = 'x' x 150;
    my @c = map { "<sip:big$_-$long\@127.0.0.1:" . (7300 + $_) . ">;+sip.instance=\"<urn:uuid:$_-$long>\"" } 0 .. 9;
    my $r = $t->register(user => 'wide', transport => 'tcp', expires => 600, contacts => [ join(', ', @c) ]);
    is($r && $r->code, 200, 'ten contacts of ~350 bytes each over TCP -> 200');
    is(scalar($r ? $r->headers('contact') : ()), 10, '... the TCP 200 lists all ten');
    ok(!($r && $r->header('warning')), '... without a Warning');

    my $s = $t->udp_socket;
    my $raw = $t->sip_request(method => 'REGISTER', uri => "sip:127.0.0.1:$port", sock => $s,
                              to => '<' . $t->aor('wide') . '>', from => '<' . $t->aor('wide') . '>;tag=' . rand_token(6));
    my @got = $t->udp_request($raw, 5, sock => $s);
    my $d = $got[-1] // '';
    my $m = parse_msg($d);
    is($m && $m->code, 200, 'the same AoR fetched over UDP -> 200');
    cmp_ok(length($d), '<=', 1300, 'the UDP 200 is ' . length($d) . ' bytes, at most 1300 (RFC 3261 §18.1.1)');
    my $n = scalar($m ? $m->headers('contact') : ());
    ok($n >= 1 && $n < 10, "... listing $n of the ten contacts");
    like($m && $m->header('warning') // '', qr/^399 \S+ "Contact list cut to fit a UDP datagram/, '... with a Warning that the list is cut');
    is($m && $m->header('content-length'), '0', '... and still a complete message (Content-Length: 0)');

    # a refresh over UDP of the last contact: that one is listed first
    $raw = $t->sip_request(method => 'REGISTER', uri => "sip:127.0.0.1:$port", sock => $s,
                           to => '<' . $t->aor('wide') . '>', from => '<' . $t->aor('wide') . '>;tag=' . rand_token(6),
                           headers => [ Contact => $c[9] . ';expires=500' ]);
    @got = $t->udp_request($raw, 5, sock => $s);
    $d = $got[-1] // '';
    $m = parse_msg($d);
    is($m && $m->code, 200, 'refresh of the tenth contact over UDP -> 200');
    cmp_ok(length($d), '<=', 1300, '... ' . length($d) . ' bytes');
    my @first = $m ? $m->headers('contact') : ();
    like($first[0] // '', qr/^<sip:big9-x+\@127\.0\.0\.1:7309>.*;expires=(?:499|500);/, '... the refreshed contact is listed, first, with its new expiry')
        or diag(join "\n", @first);
}

# ---------------------------------------------------------------- a TAB in a quoted value survives restarts
{
    my $contact = "\"Tab\tName\" <sip:tab\@127.0.0.1:7400>;+sip.instance=\"<urn:uuid:a\tb>\"";
    my $r = $t->register(user => 'tab', expires => 600, contacts => [ $contact ]);
    is($r && $r->code, 200, 'Contact with a TAB in a quoted parameter and in the display name -> 200');
    my ($c) = SipRegTest::contacts_of($r);
    is($c && $c->{params}, ";+sip.instance=\"<urn:uuid:a\tb>\"", '... the parameter is kept with its TAB');
    like($c && $c->{raw} // '', qr/^"Tab\tName" </, '... and the display name');
    for my $how ('kill', 'graceful') {
        if ($how eq 'kill') {
            restart_engine_by_kill($t, 'TAB');
        } else {
            my $old = $t->engine_pid;
            ok($t->apachectl('graceful') && wait_until(10, sub { my $p = $t->engine_pid; $p && $p != $old }, 0.05)
               && wait_until(5, sub { $t->options_ok('udp') }, 0.1), 'TAB: graceful restart');
        }
        my ($f) = $t->fetch('tab');
        my ($c2) = SipRegTest::contacts_of($f);
        ok($c2 && $c2->{uri} eq 'sip:tab@127.0.0.1:7400' && $c2->{params} eq ";+sip.instance=\"<urn:uuid:a\tb>\""
           && $c2->{raw} =~ /^"Tab\tName" </, "after the $how restart the binding is still there, TAB and display name included")
            or diag(SipRegTest::dump_contacts($f));
        ($f, my %b) = $t->fetch('ten');
        is(scalar(keys %b), 10, "after the $how restart the ten bindings of 'ten' are back too");
    }
}
$t->dump_log_on_failure;
$t->stop;

# ================================================================ B: SipMaxBranches, SipMaxBindings
my $tb = SipRegTest->new(vhost_conf => "SipMaxContacts 0\nSipMaxBranches 3\n<Location \"/red\@127.0.0.1\">\n    SipMode redirect\n</Location>",
                         server_conf => 'SipMaxBindings 13');
{
    my @socks = map { $tb->udp_socket } 0 .. 5;
    my @contacts = map { '<sip:fork' . $_ . '@127.0.0.1:' . $socks[$_]->sockport . '>;expires=' . (1000 - 100 * $_) } 0 .. 5;
    my $cid = rand_token(12) . '@fork';
    my $r = $tb->register(user => 'fork', call_id => $cid, cseq => 1, contacts => \@contacts);
    is($r && $r->code, 200, 'SipMaxContacts 0 (no limit): six contacts -> 200');
    is(scalar(keys %{ { binding_map($r) } }), 6, '... six bindings');

    my $mark = $tb->log_mark;
    my $caller = $tb->udp_socket;
    my $raw = $tb->sip_request(method => 'MESSAGE', uri => $tb->aor('fork'), sock => $caller);
    $tb->udp_send($raw, sock => $caller);
    my %got;
    my $sel = IO::Select->new(@socks);
    my $end = time + 1.5;
    while ((my $left = $end - time) > 0) {
        for my $s ($sel->can_read($left)) {
            recv($s, my $d, 70000, 0);
            my $m = parse_msg($d) or next;
            next if $m->is_response;
            my ($i) = grep { $socks[$_] == $s } 0 .. 5;
            $got{$i}{ ($m->header('via') // '') =~ /branch=([^;,\s]+)/ ? $1 : '' }++;
            # answer each branch so that it ends
            my $resp = "SIP/2.0 200 OK\r\n" . join('', map { "$_\r\n" } grep { /^(?:via|from|to|call-id|cseq):/i } split /\r\n/, $m->head)
                     . "Content-Length: 0\r\n\r\n";
            send($s, $resp, 0, Socket::pack_sockaddr_in($tb->sip_port, Socket::inet_aton('127.0.0.1')));
        }
    }
    is(join(',', sort keys %got), '0,1,2', 'SipMaxBranches 3: the MESSAGE went to the three best contacts only (longest-lived at equal q)')
        or diag(explain(\%got));
    is(scalar(grep { keys %{ $got{$_} } != 1 } keys %got), 0, '... one branch each');
    my $final = $tb->udp_recv($caller, 3);
    my $fm = $final ? parse_msg($final) : undef;
    $fm = parse_msg($tb->udp_recv($caller, 3) // '') if $fm && !$fm->is_final;
    is($fm && $fm->code, 200, '... and the caller got the 200');
    ok($tb->wait_log($mark, qr/forked to the best 3 of 6 contacts \(SipMaxBranches\)/), '... log line: forked to the best 3 of 6');

    # redirect mode: the 302 lists the best SipMaxBranches contacts
    $r = $tb->register(user => 'red', contacts => [ map { "<sip:red$_\@127.0.0.1:" . (7800 + $_) . ">;q=0." . (5 + $_) } 0 .. 4 ], expires => 600);
    is($r && $r->code, 200, 'red registered five contacts, q 0.5 to 0.9');
    my $m = $tb->request_to('red', method => 'INVITE');
    is($m && $m->code, 302, 'INVITE to red (SipMode redirect) -> 302');
    is(join(' ', map { /^<sip:(red\d)\@/ ? $1 : $_ } $m ? $m->headers('contact') : ()), 'red4 red3 red2',
       '... listing the best three contacts (SipMaxBranches 3), best q first');
    like($m && $m->header('warning') // '', qr/^399 \S+ "Only the best registered contacts are listed"$/, '... with a Warning that more are registered');

    # SipMaxBindings 13: eleven bound
    $r = $tb->register(user => 'other', expires => 600, contacts => [ '<sip:o1@127.0.0.1:7501>, <sip:o2@127.0.0.1:7502>' ]);
    is($r && $r->code, 200, 'SipMaxBindings 13: two more bindings (13 in all) -> 200');
    $mark = $tb->log_mark;
    $r = $tb->register(user => 'third', expires => 600, contacts => [ '<sip:t1@127.0.0.1:7503>' ]);
    is($r && $r->code, 503, 'a fourteenth binding -> 503');
    like($r && $r->header('retry-after') // '', qr/^\d+$/, '... with Retry-After');
    ok($tb->wait_log($mark, qr/503 Service Unavailable for REGISTER .*SipMaxBindings/), '... and a log line');
    my ($f, %b) = $tb->fetch('third');
    is(scalar(keys %b), 0, '... nothing stored');
    $r = $tb->register(user => 'other', expires => 900, contacts => [ '<sip:o1@127.0.0.1:7501>' ]);
    is($r && $r->code, 200, 'refreshing a binding with the store full -> 200');
    $r = $tb->register(user => 'fork', call_id => $cid, cseq => 2, contacts => [ '<sip:fork5@127.0.0.1:' . $socks[5]->sockport . '>;expires=0' ]);
    is($r && $r->code, 200, 'removing one -> 200');
    $r = $tb->register(user => 'third', expires => 600, contacts => [ '<sip:t1@127.0.0.1:7503>' ]);
    is($r && $r->code, 200, 'then the new binding fits -> 200');

    # addresses-of-record registered and removed again are remembered (480,
    # not 404), but no more than SipMaxBindings of them: the oldest go
    $r = $tb->register(user => 'red', contacts => [ '*' ], expires => 0);
    is($r && $r->code, 200, 'Contact: * removes red\'s five bindings (room for more)');
    my @gone = map { "gone$_" } 1 .. 15;
    for my $u (@gone) {
        my $cid = rand_token(8) . '@gone';
        $tb->register(user => $u, call_id => $cid, cseq => 1, expires => 600, contacts => [ "<sip:$u\@127.0.0.1:7900>" ]);
        $tb->register(user => $u, call_id => $cid, cseq => 2, expires => 0, contacts => [ "<sip:$u\@127.0.0.1:7900>" ]);
    }
    sleep 1.5;      # the once-a-second sweep forgets the excess
    my @codes = map { my $x = $tb->request_to($_); $x ? $x->code : 0 } @gone;
    is("@codes[-13 .. -1]", join(' ', ('480') x 13), 'the 13 most recently emptied AoRs still get 480');
    is(scalar(grep { $_ == 404 } @codes), 2, 'the two emptied longest ago are forgotten (404): known empty AoRs stay within SipMaxBindings')
        or diag("@codes");
}
$tb->dump_log_on_failure;
$tb->stop;

# ================================================================ C: journal replay
my $N_AORS = 8800;      # x 10 bindings, plus 12 000 on one AoR = 100 000
my $big_sock = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'udp') or die "udp: $!";
setsockopt($big_sock, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(), 1 << 22);
my $big_port = $big_sock->sockport;
my $tc = SipRegTest->new(server_conf => 'SipLocationFile @VAR@/big.journal', start_timeout => 60,
                         # records REGISTRATIONS, then leaves the request to the registrar
                         scripts => { 'big@127.0.0.1' => "#!/bin/sh\nprintf '%s' \"\$REGISTRATIONS\" > \@VAR\@/big.regs\nexit 0\n" },
                         setup => sub {
    my ($self) = @_;
    my $file = $self->var . '/big.journal';
    open(my $fh, '>', $file) or die "$file: $!";
    my $now = int(time * 1e6);
    my $exp = $now + 3600 * 1e6;
    my $host = '127.0.0.1';
    print $fh "V\t2\n";
    for my $a (0 .. $N_AORS - 1) {
        for my $c (0 .. 9) {
            print $fh "B\tsip:u$a\@$host\tsip:u$a-$c\@$host:" . (10000 + $c) . "\t\tcid-$a\t1\t$exp\t1000\t\t\n";
        }
    }
    for my $c (0 .. 11999) {
        print $fh "B\tsip:big\@$host\tsip:big$c\@$host:$big_port\t\tcid-big\t1\t$exp\t1000\t\t\n";
    }
    # an expiry in the year 3000, a line with a garbage q, one cut short
    print $fh "B\tsip:future\@$host\tsip:future\@$host:7600\t\tcid-f\t1\t32503680000000000\t1000\t\t\n";
    print $fh "B\tsip:badq\@$host\tsip:badq\@$host:7601\t\tcid-q\t1\t$exp\tnan\t\t\n";
    print $fh "B\tsip:short\@$host\tsip:short\@$host:7602\n";
    close $fh;
    chmod 0666, $file;
});
{
    my $log = $tc->error_log;
    my ($n, $lines, $ms) = $log =~ /(\d+) bindings restored from (\d+) journal lines in (\d+) ms/;
    is($n, 100001, 'journal replay: 100 000 bindings (+1) restored');
    ok(defined $ms && $ms < 5000, 'replay of 100 000 bindings took ' . ($ms // '?') . ' ms (< 5 s)');
    note('journal replay of ' . ($n // '?') . ' bindings / ' . ($lines // '?') . ' lines: ' . ($ms // '?') . ' ms');
    like($log, qr/2 unreadable journal lines skipped/, 'the garbage-q and the cut-short lines are skipped, and logged');
    my $t0 = time;
    ok($tc->options_ok('udp'), 'OPTIONS after the replay -> 200');
    cmp_ok(time - $t0, '<', 0.5, '... at once');

    my ($f, %b) = $tc->fetch('u4321');
    is(scalar(keys %b), 10, 'an AoR from the journal has its ten bindings');
    ($f, %b) = $tc->fetch('future');
    my $e = ($b{'sip:future@127.0.0.1:7600'} // {})->{expires};
    ok(defined $e && $e <= 86400, 'an expiry in the year 3000 is cut to SipMaxExpires on replay (' . ($e // 'none') . ' s)');
    ($f, %b) = $tc->fetch('badq');
    is(scalar(keys %b), 0, 'the line with q=nan made no binding');

    # one request to the AoR with 12 000 contacts: SipMaxBranches (16) branches, no more
    my $caller = $tc->udp_socket;
    $t0 = time;
    my $raw = $tc->sip_request(method => 'MESSAGE', uri => 'sip:big@127.0.0.1:' . $tc->sip_port, sock => $caller);
    $tc->udp_send($raw, sock => $caller);
    my (%branches, $dgrams);
    my $end = time + 2;
    while ((my $left = $end - time) > 0) {
        my $d = $tc->udp_recv($big_sock, $left) // last;
        my $m = parse_msg($d) or next;
        next if $m->is_response;
        $dgrams++;
        $branches{ ($m->header('via') // '') =~ /branch=([^;,\s]+)/ ? $1 : '' }++;
        my $resp = "SIP/2.0 486 Busy Here\r\n" . join('', map { "$_\r\n" } grep { /^(?:via|from|to|call-id|cseq):/i } split /\r\n/, $m->head)
                 . "Content-Length: 0\r\n\r\n";
        send($big_sock, $resp, 0, Socket::pack_sockaddr_in($tc->sip_port, Socket::inet_aton('127.0.0.1')));
    }
    is(scalar(keys %branches), 16, "a MESSAGE to the AoR with 12 000 bindings forks to SipMaxBranches 16 ($dgrams datagrams)");
    my $regs = '';
    if (open(my $fh, '<', $tc->var . '/big.regs')) { local $/; $regs = <$fh> // '' }
    my $nregs = () = $regs =~ /<sip:big\d+\@/g;
    ok(length($regs) > 60000 && length($regs) <= 65536 && $nregs > 1000,
       'its script ran, with REGISTRATIONS cut to 64 KB (' . length($regs) . " bytes, $nregs contacts): the exec limit is not hit");
    unlike($regs, qr/,$/, '... ending on a whole contact');
    my @r = $tc->udp_drain($caller);
    ok(grep({ m{^SIP/2\.0 486} } @r), '... and the caller gets the 486');
    $t0 = time;
    ok($tc->options_ok('udp'), 'OPTIONS meanwhile -> 200');
    cmp_ok(time - $t0, '<', 0.5, '... at once');
    my $r = $tc->register(user => 'big', expires => 600, contacts => [ '<sip:big-new@127.0.0.1:7700>' ], transport => 'tcp', timeout => 10);
    is($r && $r->code, 403, 'adding a binding to that AoR (above SipMaxContacts) -> 403');
}
$tc->dump_log_on_failure;
$tc->stop;

# ================================================================ D: a journal of the previous version
my $td = SipRegTest->new(server_conf => 'SipLocationFile @VAR@/old.journal', setup => sub {
    my ($self) = @_;
    my $file = $self->var . '/old.journal';
    open(my $fh, '>', $file) or die "$file: $!";
    my $exp = int((time + 900) * 1e6);
    # version 1: S lines, no escapes (a backslash is a backslash), no display name
    print $fh "S\tsip:v1\@127.0.0.1\tsip:v1\@127.0.0.1:7950\t;x=\"a\\tb\"\tcid-v1\t3\t$exp\t500\t<sip:edge.example.com;lr>\n";
    print $fh "S\tsip:v1\@127.0.0.1\tsip:v1b\@127.0.0.1:7951\t\tcid-v1\t3\t$exp\t1000\t\n";
    print $fh "D\tsip:v1\@127.0.0.1\tsip:v1b\@127.0.0.1:7951\n";
    close $fh;
    chmod 0666, $file;
});
{
    for my $round ('replayed from version 1', 'after a restart (rewritten as version 3)') {
        my ($f, %b) = $td->fetch('v1');
        my $c = $b{'sip:v1@127.0.0.1:7950'};
        ok($c && $c->{params} eq ';x="a\\tb"' && $c->{q} eq '0.5' && $c->{expires} > 800 && keys %b == 1,
           "old journal $round: the binding with its backslash, q, expiry; the removed one stays removed")
            or diag(SipRegTest::dump_contacts($f));
        last if $round =~ /restart/;
        my $old = $td->engine_pid;
        kill 'KILL', $old;
        ok(wait_until(10, sub { my $p = $td->engine_pid; $p && $p != $old }, 0.05)
           && wait_until(5, sub { $td->options_ok('udp') }, 0.1), 'engine restarted');
        open(my $fh, '<', $td->var . '/old.journal');
        my $first = <$fh> // '';
        if (($ENV{SIP_TEST_ENGINES} || 1) > 1) {
            # several engines: engine 0 compacts only past SipLocationCompact
            # lines (docs/architecture.md), so a small journal stays as written
            isnt($first, "V\t3\n", 'two engines: a small journal is not rewritten at start');
        }
        else {
            is($first, "V\t3\n", 'the journal was rewritten in the current version (3, issue 17)');
        }
    }
}
$td->dump_log_on_failure;
$td->stop;

# ================================================================ configuration errors
for my $bad ([ vhost_conf => 'SipMaxContacts many', qr/SipMaxContacts needs a number from 0 to/ ],
             [ vhost_conf => 'SipMaxContacts -1', qr/SipMaxContacts needs a number from 0 to/ ],
             [ vhost_conf => 'SipMaxBranches 0', qr/SipMaxBranches needs a number from 1 to/ ],
             [ vhost_conf => 'SipMaxBindings 10', qr/SipMaxBindings cannot occur within <VirtualHost> section/ ],
             [ server_conf => 'SipMaxBindings 1e5', qr/SipMaxBindings needs a number from 0 to/ ]) {
    my ($where, $text, $re) = @$bad;
    my $c = SipTest->new(start => 0, $where => $text);
    $c->write_conf;
    my ($rc, $out) = $c->_run_apache('-t');
    $c->cleanup_dir;
    isnt($rc, 0, "'$text' ($where) refused by apache2 -t");
    like($out, $re, '... with a message saying why');
}

done_testing;
