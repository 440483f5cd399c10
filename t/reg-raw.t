#!/usr/bin/perl
# Registrar (RFC 3261 §10.3) with raw UDP/TCP sockets and exact assertions:
# several contacts with their own expires and q, the 200's Contact list and
# Date, refresh, CSeq ordering per Call-ID (500), 423 + Min-Expires, invalid
# wildcards (400), removal, wildcard removal, SipMaxExpires capping, the
# expires countdown, real expiry (SipMinExpires 1), the address-of-record
# rules (404 for foreign domains, host case, missing port), and what requests
# to local users get (404 / 480 / built-in OPTIONS 200).
use strict;
use warnings;
use Test::More;
use Time::HiRes qw(time sleep);
use POSIX ();
use SipTest qw(rand_token);
use SipRegTest;

*bindings_are = \&SipRegTest::bindings_are;
*binding_map  = \&SipRegTest::binding_map;

my $t = SipRegTest->new(vhost_conf => "ServerAlias Reg.Example.TEST");
my $port = $t->sip_port;
# stands in for a missing response, so that ->code gives 000 in the test output
sub nores { return SipTest::Msg->parse("SIP/2.0 000 no response\r\n\r\n") }

my $C = sub { "sip:$_[0]\@127.0.0.1:" . (5060 + $_[1]) };   # contact URIs

# ---------------------------------------------------------------- several contacts
my $cid = rand_token(12) . '@multi';
my $t_reg = time;
my $r = $t->register(user => 'multi', call_id => $cid, cseq => 1, expires => 1000,
                     contacts => [ '<' . $C->('m1', 1) . '>;q=0.8, "Two, Second" <' . $C->('m2', 2) . ';transport=tcp>;expires=120',
                                   '<' . $C->('m3', 3) . '>;expires=300;q=0.5',
                                   $C->('m4', 4) . ';q=0.05',
                                   '<' . $C->('m5', 5) . '>;Q=0;EXPIRES=200' ]);
is($r && $r->code, 200, 'REGISTER with five contacts in four Contact headers -> 200')
    or diag($t->_log_tail);
bindings_are({ binding_map($r) }, {
    $C->('m1', 1)                   => [ 999, 1000, '0.8' ],
    $C->('m2', 2) . ';transport=tcp' => [ 119, 120, '1' ],
    $C->('m3', 3)                   => [ 299, 300, '0.5' ],
    $C->('m4', 4)                   => [ 999, 1000, '0.05' ],
    $C->('m5', 5)                   => [ 199, 200, '0' ],
}, '200 lists every binding with its own expires (param, else Expires header) and q (1, 0.8, 0.5, 0.05, 0)', $r);
if ($r) {
    my @lines = $r->headers('contact');
    is(scalar(@lines), 5, 'one Contact header per binding');
    my @bad = grep { !m{^(?:"Two, Second" )?<sip:[^<>]+>;expires=\d+;q=(?:1|0|0\.\d*[1-9])$} } @lines;
    ok(!@bad, 'every Contact is exactly [display-name ]<uri>;expires=N;q=Q') or diag(join "\n", @bad);
    is(scalar(grep { /^"Two, Second" <\Q${\ $C->('m2', 2)}\E;transport=tcp>/ } @lines), 1,
       'the display name "Two, Second" of m2 is kept in the 200 (RFC 3050 R35)') or diag(join "\n", @lines);
    my $date = $r->header('date') // '';
    like($date, qr/^(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$/,
         '200 has a Date header in RFC 1123 format (GMT)');
    my %mon; @mon{qw(Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec)} = 0 .. 11;
    if ($date =~ /, (\d\d) (\w{3}) (\d{4}) (\d\d):(\d\d):(\d\d) GMT$/) {
        local $ENV{TZ} = 'UTC';
        POSIX::tzset();
        my $d = POSIX::mktime($6, $5, $4, $1, $mon{$2}, $3 - 1900);
        POSIX::tzset();
        cmp_ok(abs($d - time), '<', 10, 'Date is the current time');
    } else {
        fail('Date is the current time');
    }
    like($r->header('to') // '', qr/^<\Q${\ $t->aor('multi')}\E>;tag=\S+$/, '200 copies To and adds a tag');
    is($r->header('call-id'), $cid, '200 copies Call-ID');
    is($r->header('cseq'), '1 REGISTER', '200 copies CSeq');
}

# ---------------------------------------------------------------- refresh
$r = $t->register(user => 'multi', call_id => $cid, cseq => 2,
                  contacts => [ '<' . $C->('m1', 1) . '>;q=0.3;expires=500' ]);
is($r && $r->code, 200, 'refresh (same Call-ID, higher CSeq) -> 200');
bindings_are({ binding_map($r) }, {
    $C->('m1', 1)                   => [ 499, 500, '0.3' ],
    $C->('m2', 2) . ';transport=tcp' => [ 118, 120, '1' ],
    $C->('m3', 3)                   => [ 298, 300, '0.5' ],
    $C->('m4', 4)                   => [ 998, 1000, '0.05' ],
    $C->('m5', 5)                   => [ 198, 200, '0' ],
}, 'refresh changed only m1 (expires 500, q 0.3)', $r);

# another Call-ID may use any CSeq (the CSeq check is per Call-ID)
$r = $t->register(user => 'multi', call_id => rand_token(12) . '@other', cseq => 1,
                  contacts => [ '<' . $C->('m3', 3) . '>;expires=400' ]);
is($r && $r->code, 200, 'same contact from another Call-ID with a lower CSeq -> 200');
my $m3 = { binding_map($r) }->{ $C->('m3', 3) } // {};
ok(($m3->{expires} // 0) >= 399 && ($m3->{expires} // 0) <= 400 && ($m3->{q} // '') eq '1',
   '... and the binding was updated (expires 400, q 1 as the new Contact has no q)')
    or diag(SipRegTest::dump_contacts($r));

# ---------------------------------------------------------------- out of order -> 500
$r = $t->register(user => 'multi', call_id => $cid, cseq => 2,
                  contacts => [ '<' . $C->('m7', 7) . '>', '<' . $C->('m1', 1) . '>;expires=900' ], expires => 700);
is($r && $r->code, 500, 'same Call-ID, CSeq equal to the stored one -> 500');
$r = $t->register(user => 'multi', call_id => $cid, cseq => 1,
                  contacts => [ '<' . $C->('m2', 2) . ';transport=tcp>;expires=0' ]);
is($r && $r->code, 500, 'same Call-ID, lower CSeq (removal) -> 500');
my ($f, %b) = $t->fetch('multi');
is($f && $f->code, 200, 'REGISTER without Contact -> 200');
bindings_are(\%b, {
    $C->('m1', 1)                   => [ 495, 500, '0.3' ],
    $C->('m2', 2) . ';transport=tcp' => [ 115, 120, '1' ],
    $C->('m3', 3)                   => [ 395, 400, '1' ],
    $C->('m4', 4)                   => [ 995, 1000, '0.05' ],
    $C->('m5', 5)                   => [ 195, 200, '0' ],
}, 'after the 500s nothing changed (m7 not added, m1 not refreshed, m2 not removed)', $f);

# ---------------------------------------------------------------- too brief -> 423
$r = $t->register(user => 'multi', call_id => rand_token(12) . '@brief', cseq => 1,
                  contacts => [ '<' . $C->('m8', 8) . '>;expires=3600', '<' . $C->('m2', 2) . ';transport=tcp>;expires=59' ]);
is($r && $r->code, 423, 'a contact with expires=59 (< SipMinExpires 60) -> 423');
is($r && $r->reason, 'Interval Too Brief', '423 reason phrase');
is($r && $r->header('min-expires'), '60', '423 carries Min-Expires: 60');
$r = $t->register(user => 'multi', call_id => rand_token(12) . '@brief', cseq => 1,
                  contacts => [ '<' . $C->('m8', 8) . '>' ], expires => 1);
is($r && $r->code, 423, 'Expires: 1 header -> 423');
is($r && $r->header('min-expires'), '60', '... with Min-Expires: 60');
($f, %b) = $t->fetch('multi');
ok(!$b{ $C->('m8', 8) }, 'after the 423s m8 is not bound') or diag(SipRegTest::dump_contacts($f));
cmp_ok(($b{ $C->('m2', 2) . ';transport=tcp' } // {})->{expires} // 0, '>', 100,
       'after the 423 m2 keeps its expiry (not shortened)');
$r = $t->register(user => 'multi', call_id => rand_token(12) . '@min', cseq => 1,
                  contacts => [ '<' . $C->('m9', 9) . '>;expires=60' ]);
is($r && $r->code, 200, 'expires=60 (exactly SipMinExpires) -> 200');
ok(({ binding_map($r) }->{ $C->('m9', 9) } // {})->{expires} // 0 >= 59, '... bound for 60 s')
    or diag(SipRegTest::dump_contacts($r));

# ---------------------------------------------------------------- invalid wildcards -> 400
for my $case ([ 'Contact: * with Expires: 3600', [ '*' ], 3600 ],
              [ 'Contact: * without Expires',    [ '*' ], undef ],
              [ 'Contact: *, <uri> in one header with Expires: 0', [ '*, <' . $C->('m1', 1) . '>' ], 0 ],
              [ 'Contact: * plus another Contact header with Expires: 0', [ '*', '<' . $C->('m1', 1) . '>' ], 0 ]) {
    my ($name, $contacts, $exp) = @$case;
    $r = $t->register(user => 'multi', call_id => rand_token(12) . '@star', cseq => 1,
                      contacts => $contacts, expires => $exp);
    is($r && $r->code, 400, "$name -> 400");
}
($f, %b) = $t->fetch('multi');
is(scalar(keys %b), 6, 'after the 400s all six bindings are still there') or diag(SipRegTest::dump_contacts($f));

# ---------------------------------------------------------------- removal
$r = $t->register(user => 'multi', call_id => $cid, cseq => 3,
                  contacts => [ $C->('m4', 4) . ';expires=0' ]);
is($r && $r->code, 200, 'contact with expires=0 -> 200');
ok(!{ binding_map($r) }->{ $C->('m4', 4) }, '... m4 removed') or diag(SipRegTest::dump_contacts($r));
$r = $t->register(user => 'multi', call_id => $cid, cseq => 4,
                  contacts => [ '<' . $C->('m5', 5) . '>' ], expires => 0);
is($r && $r->code, 200, 'contact without expires param and Expires: 0 -> 200');
%b = binding_map($r);
ok(!$b{ $C->('m5', 5) }, '... m5 removed') or diag(SipRegTest::dump_contacts($r));
is(scalar(keys %b), 4, '... the other four remain') or diag(SipRegTest::dump_contacts($r));

# ---------------------------------------------------------------- wildcard removal
$r = $t->register(user => 'multi', call_id => rand_token(12) . '@wild', cseq => 1,
                  contacts => [ '*' ], expires => 0);
is($r && $r->code, 200, 'Contact: * with Expires: 0 -> 200');
is(scalar(() = $r ? $r->headers('contact') : ()), 0, '... and the 200 lists no Contact');
($f, %b) = $t->fetch('multi');
is(scalar(keys %b), 0, 'REGISTER without Contact afterwards: no bindings') or diag(SipRegTest::dump_contacts($f));
is(($t->request_to('multi') // nores())->code, 480, 'MESSAGE to the user whose bindings were all removed -> 480');
is(($t->request_to('multi', method => 'INVITE') // nores())->code, 480, 'INVITE to that user -> 480');
is(($t->request_to('multi', method => 'OPTIONS') // nores())->code, 200, 'OPTIONS to that user -> 200 from the server itself');
is(($t->request_to('never-' . rand_token(6)) // nores())->code, 404, 'MESSAGE to a never registered user -> 404');
is(($t->request_to('never-' . rand_token(6), method => 'INVITE') // nores())->code, 404, 'INVITE to a never registered user -> 404');
is(($t->request_to('never-' . rand_token(6), method => 'OPTIONS') // nores())->code, 200, 'OPTIONS to a never registered user -> 200');

# ---------------------------------------------------------------- contact URI comparison, bad expires param
{
    my $ecid = rand_token(12) . '@eq';
    $r = $t->register(user => 'eq', call_id => $ecid, cseq => 1, expires => 600,
                      contacts => [ '<sip:x@Host.Example.COM:5070>', '<sip:y@127.0.0.1:5071>' ]);
    is($r && $r->code, 200, 'eq: two bindings');
    # §10.3 step 7 compares contacts with the URI rules of §19.1.4: the host is case-insensitive
    $r = $t->register(user => 'eq', call_id => $ecid, cseq => 2, contacts => [ '<sip:x@host.example.com:5070>;expires=0' ]);
    %b = binding_map($r);
    ok($r && $r->code == 200 && !$b{'sip:x@Host.Example.COM:5070'} && !$b{'sip:x@host.example.com:5070'},
       'removing <sip:x@host.example.com:5070> removes the binding registered as <sip:x@Host.Example.COM:5070> (RFC 3261 19.1.4: host compared case-insensitively)')
        or diag(SipRegTest::dump_contacts($r));
    # a malformed expires parameter is refused (like a malformed Expires header), it does not remove the binding
    $r = $t->register(user => 'eq', call_id => $ecid, cseq => 3, contacts => [ '<sip:y@127.0.0.1:5071>;expires=abc' ]);
    is($r && $r->code, 400, 'contact parameter expires=abc -> 400 (as Expires: abc is)')
        or diag(SipRegTest::dump_contacts($r));
    ($f, %b) = $t->fetch('eq');
    ok($b{'sip:y@127.0.0.1:5071'}, '... and the binding is still there') or diag(SipRegTest::dump_contacts($f));
    $r = $t->register(user => 'eq', call_id => $ecid, cseq => 4, contacts => [ '<sip:y@127.0.0.1:5071>' ], expires => 'abc');
    is($r && $r->code, 400, 'Expires: abc -> 400');
}

# ---------------------------------------------------------------- max expires, default expires
$r = $t->register(user => 'cap', contacts => [ '<' . $C->('cap1', 11) . '>' ], expires => 100000);
is($r && $r->code, 200, 'Expires: 100000 -> 200');
bindings_are({ binding_map($r) }, { $C->('cap1', 11) => [ 86399, 86400, '1' ] },
             'Expires: 100000 shortened to SipMaxExpires (default 86400)', $r);
$r = $t->register(user => 'cap', contacts => [ '<' . $C->('cap2', 12) . '>;expires=4294967296' ]);
ok({ binding_map($r) }->{ $C->('cap2', 12) } && { binding_map($r) }->{ $C->('cap2', 12) }{expires} <= 86400
   && { binding_map($r) }->{ $C->('cap2', 12) }{expires} >= 86399,
   'contact expires=4294967296 shortened to 86400') or diag(SipRegTest::dump_contacts($r));
$r = $t->register(user => 'dflt', contacts => [ '<' . $C->('d1', 13) . '>' ]);
bindings_are({ binding_map($r) }, { $C->('d1', 13) => [ 3599, 3600, '1' ] },
             'no expires anywhere: SipDefaultExpires (default 3600)', $r);

# ---------------------------------------------------------------- countdown
{
    my $t0 = time;
    $r = $t->register(user => 'count', contacts => [ '<' . $C->('c1', 14) . '>' ], expires => 70);
    my $e0 = ({ binding_map($r) }->{ $C->('c1', 14) } // {})->{expires};
    ok(defined $e0 && $e0 >= 69 && $e0 <= 70, 'Expires: 70 -> listed expires 69..70 at once') or diag(SipRegTest::dump_contacts($r));
    sleep 2 - (time - $t0) if time - $t0 < 2;
    sleep 0.05;
    ($f, %b) = $t->fetch('count');
    my $e2 = ($b{ $C->('c1', 14) } // {})->{expires};
    ok(defined $e2 && $e2 <= 68, 'two seconds later the listed expires is <= 68') or diag(SipRegTest::dump_contacts($f));
    ok(defined $e2 && $e2 >= 66, '... and >= 66 (counts down, not reset)') or diag(SipRegTest::dump_contacts($f));
}

# ---------------------------------------------------------------- address-of-record
for my $case ([ 'a foreign domain', '<sip:foreign@example.com>' ],
              [ 'a foreign domain with our port', "<sip:foreign\@example.com:$port>" ],
              [ 'our address on another port', '<sip:foreign@127.0.0.1:' . SipTest::free_port() . '>' ],
              [ 'another IP address', "<sip:foreign\@10.255.255.1:$port>" ]) {
    my ($name, $to) = @$case;
    my $m = $t->log_mark;
    $r = $t->register(user => 'foreign', to => $to, contacts => [ '<' . $C->('f1', 15) . '>' ], expires => 600);
    is($r && $r->code, 404, "To in $name ($to) -> 404")
        or diag(SipRegTest::dump_contacts($r) . "\n" . $t->log_since($m));
}
($f, %b) = $t->fetch('foreign');
is(scalar(keys %b), 0, 'nothing was bound for sip:foreign@127.0.0.1 by those REGISTERs')
    or diag(SipRegTest::dump_contacts($f));
if (%b) {
    # (it would be proxied to the dead contact: do not wait for that)
    fail('MESSAGE to sip:foreign@127.0.0.1 -> 404 (never registered): not sent, a binding exists');
} else {
    is(($t->request_to('foreign') // nores())->code, 404, 'MESSAGE to sip:foreign@127.0.0.1 -> 404 (never registered)');
}

# host case and a missing port: same address-of-record
$r = $t->register(user => 'Dave', to => '<sip:Dave@REG.Example.Test>', contacts => [ '<' . $C->('dave', 16) . '>' ], expires => 600);
is($r && $r->code, 200, 'To <sip:Dave@REG.Example.Test> (a ServerAlias, no port) -> 200');
($f, %b) = $t->fetch('Dave', to => "<sip:Dave\@reg.example.test:$port>");
ok($b{ $C->('dave', 16) }, 'same AoR as <sip:Dave@reg.example.test:SIPPORT> (host lower-cased, no port = our port)')
    or diag(SipRegTest::dump_contacts($f));
($f, %b) = $t->fetch('dave', to => "<sip:dave\@reg.example.test:$port>");
is(scalar(keys %b), 0, 'sip:dave@... (user part differs in case) is another AoR') or diag(SipRegTest::dump_contacts($f));
$r = $t->register(user => 'erin', to => '<sip:erin@127.0.0.1>', contacts => [ '<' . $C->('erin', 17) . '>' ], expires => 600);
is($r && $r->code, 200, 'To <sip:erin@127.0.0.1> (no port) -> 200');
($f, %b) = $t->fetch('erin');
ok($b{ $C->('erin', 17) }, 'same AoR as sip:erin@127.0.0.1:SIPPORT') or diag(SipRegTest::dump_contacts($f));

# over TCP
$r = $t->register(user => 'tcpuser', transport => 'tcp', contacts => [ '<' . $C->('tcp1', 18) . ';transport=tcp>' ], expires => 600);
is($r && $r->code, 200, 'REGISTER over TCP -> 200');
($f, %b) = $t->fetch('tcpuser');
ok($b{ $C->('tcp1', 18) . ';transport=tcp' }, 'binding made over TCP is listed by a REGISTER over UDP')
    or diag(SipRegTest::dump_contacts($f));

$t->dump_log_on_failure;
$t->stop;

# ---------------------------------------------------------------- configured limits, real expiry
my $t2 = SipRegTest->new(vhost_conf => "SipMinExpires 1\nSipMaxExpires 300\nSipDefaultExpires 120");
{
    my $m = $t2->log_mark;
    my $t0 = time;
    $r = $t2->register(user => 'short', contacts => [ '<sip:short@127.0.0.1:5091>;expires=2', '<sip:long@127.0.0.1:5092>;expires=200' ]);
    is($r && $r->code, 200, 'SipMinExpires 1: a contact with expires=2 -> 200')
        or diag("got " . ($r ? $r->start_line . ' Min-Expires: ' . ($r->header('min-expires') // '-') : 'nothing')
                . "\n" . $t2->log_since($m));
    bindings_are({ binding_map($r) }, { 'sip:short@127.0.0.1:5091' => [ 1, 2, '1' ],
                                        'sip:long@127.0.0.1:5092'  => [ 199, 200, '1' ] },
                 '... both bindings listed (short: 1..2 s left)', $r);
    sleep 1 - (time - $t0) if time - $t0 < 1;
    ($f, %b) = $t2->fetch('short');
    ok($b{'sip:short@127.0.0.1:5091'}, 'one second later the 2 s binding is still there (never expires early)')
        if time - $t0 < 1.8;
    sleep 3.1 - (time - $t0) if time - $t0 < 3.1;
    ($f, %b) = $t2->fetch('short');
    bindings_are(\%b, { 'sip:long@127.0.0.1:5092' => [ 196, 200, '1' ] },
                 'three seconds later the 2 s binding is gone, the other remains', $f);

    $r = $t2->register(user => 'gone', contacts => [ '<sip:gone@127.0.0.1:5093>;expires=2' ]);
    is($r && $r->code, 200, 'user "gone": one binding with expires=2 -> 200');
    sleep 3;
    ($f, %b) = $t2->fetch('gone');
    is(scalar(keys %b), 0, '3 s later: no binding listed');
    $r = $t2->request_to('gone');
    is($r && $r->code, 480, 'MESSAGE to the user whose only binding expired -> 480');
    $r = $t2->request_to('gone', method => 'INVITE');
    is($r && $r->code, 480, 'INVITE to that user -> 480');
    $r = $t2->request_to('gone', method => 'OPTIONS');
    is($r && $r->code, 200, 'OPTIONS to that user -> 200 from the server itself');
}
$r = $t2->register(user => 'cfg', contacts => [ '<sip:cfg1@127.0.0.1:5094>' ], expires => 3600);
bindings_are({ binding_map($r) }, { 'sip:cfg1@127.0.0.1:5094' => [ 299, 300, '1' ] },
             'SipMaxExpires 300: Expires: 3600 shortened to 300', $r);
$r = $t2->register(user => 'cfg2', contacts => [ '<sip:cfg2@127.0.0.1:5095>' ]);
bindings_are({ binding_map($r) }, { 'sip:cfg2@127.0.0.1:5095' => [ 119, 120, '1' ] },
             'SipDefaultExpires 120: no expires anywhere -> 120', $r);
$t2->dump_log_on_failure;
$t2->stop;

done_testing;
