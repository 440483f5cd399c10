#!/usr/bin/perl
# URI-list services (issue 14, docs/explode.md): the checklist items EX-n
# of the spec by name and the scenarios X1-X10 end to end over UDP and
# TCP, with raw peers counting exactly the requests they get.
use strict;
use warnings;
use Test::More;
use lib 't/lib';
use SipExplodeTest qw(resource_lists sipfrag parse_msg multipart_parts);
use Time::HiRes qw(time sleep);

my $t = SipExplodeTest->new(
    consent => join('', map { "sip:$_\@127.0.0.1 *\n" } qw(bill joe bob u1 u2 u3 u4 u5 dave))
             . "sip:ted\@127.0.0.1 alice\nsip:*\@localhost *\n",
    after => ['<Location "/off@127.0.0.1">', '    SipExplode Off', '</Location>',
             '<Location "/aliceonly@127.0.0.1">', '    Require user alice', '</Location>'],
    vhost => ['SipLimitRequestBody 1048576']);
my $port = $t->sip_port;

# One explosion to fresh peers (names), answered at once after the final
# response; returns { res, p => { name => peer }, got => { name => [reqs] } }.
sub blast {
    my (%o) = @_;
    my $tr = $o{tr} // 'udp';
    my @peers = map { $t->peer_for($tr, name => $_) } @{ $o{names} || [] };
    my %p = map { $_->name => $_ } @peers;
    my $entries = $o{entries} ? $o{entries}->(\%p) : [ map { $_->uri } @peers ];
    my $list = $o{list} // resource_lists(entries => $entries, %{ $o{list_opts} || {} });
    my $res = $t->explode(transport => $tr, kind => $o{kind}, no_auth => $o{no_auth},
                          user => $o{user}, build => { list => $list, %{ $o{build} || {} } });
    $res->{t_answer} = $t->serve(\@peers, secs => $o{serve} // 1.5);
    my %got = map { $_->name => [ $t->requests($_) ] } @peers;
    return { res => $res, p => \%p, got => \%got };
}
sub code_of { my ($r) = @_; return $r->{res}{final} ? $r->{res}{final}->code : 'none' }
sub counts { my ($r) = @_; return { map { $_ => scalar @{ $r->{got}{$_} } } keys %{ $r->{got} } } }
sub nothing_sent { my ($r) = @_; return !grep { $_ } values %{ counts($r) } }

# ---------------------------------------------------------------- X1..X10
for my $tr (qw(udp tcp)) {
    subtest "X1 ($tr): the draft's example, corrected" => sub {
        my $c0 = $t->counters;
        my $mark = $t->log_mark;
        my @names = qw(bill joe ted bob);
        my @peers = map { $t->peer_for($tr, name => $_) } @names;
        my $res = $t->explode(transport => $tr, build => { escape => 1,
            list => resource_lists(entries => [ map { $_->uri } @peers ]) });
        is($res->{final} && $res->{final}->code, 200, '200 OK to the EXPLODE');
        ok($res->{challenged}, 'after a digest challenge');
        my $t_final = $res->{t_final};
        # nobody has answered yet: the 200 did not wait for the fan-out
        my %got = map { $_->name => [ $t->requests($_, wait => 0) ] } @peers;
        $t->serve(\@peers, secs => 2, delay => 1);
        my $t_ans = time;
        %got = map { $_->name => [ $t->requests($_) ] } @peers;
        is(scalar(@{ $got{$_} }), 1, "$_ got exactly one request") for @names;
        my $exp = parse_msg($res->{sent});
        my %cid;
        for my $p (@peers) {
            my $m = $got{ $p->name }[0] or next;
            is($m->method, 'MESSAGE', $p->name . ': MESSAGE');
            is($m->uri, $p->uri, $p->name . ': Request-URI = the target');
            like($m->header('to'), qr/<\Q${\ $p->uri }\E>/, $p->name . ': To = the target');
            like($m->header('from'), qr/<sip:alice\@127\.0\.0\.1:$port>/, $p->name . ": From = Alice's URI");
            ok($m->from_tag && $m->from_tag ne $exp->from_tag, $p->name . ': a new From tag');
            $cid{ $m->header('call-id') }++;
            isnt($m->header('call-id'), $exp->header('call-id'), $p->name . ': a new Call-ID');
            my @via = $m->header_elems('via');
            is(scalar @via, 1, $p->name . ': one Via');
            like($via[0], qr{^SIP/2\.0/\Q${\ uc $tr }\E 127\.0\.0\.1:$port;}i, $p->name . ": the server's Via");
            is($m->header('cseq'), '1 MESSAGE', $p->name . ': CSeq 1 MESSAGE');
            is($m->header('max-forwards'), 70, $p->name . ': Max-Forwards 70');
            is($m->body, 'Hi all.', $p->name . ': body Hi all.');
            like($m->header('content-type'), qr{^text/plain}i, $p->name . ': text/plain');
            ok($m->{rtime} > $t_final - 0.5 && $t_final < $t_ans, $p->name . ': the 200 came before any answer');
        }
        is(scalar(keys %cid), 4, 'four distinct Call-IDs');
        my $line = $t->wait_log($mark, qr/sip explode: alice .* MESSAGE via .*: 4 targets, 4 requests/, 5);
        ok($line, 'EX-25 log line') or diag($t->log_since($mark));
        like($line, qr/\Q${\ $_->uri }\E=200/, 'log: ' . $_->name . ' 200') for @peers;
        my $c1 = $t->counters;
        is($c1->{SipExplosions} - $c0->{SipExplosions}, 1, 'SipExplosions +1');
        is($c1->{SipExplodeRequests} - $c0->{SipExplodeRequests}, 4, 'SipExplodeRequests +4');
    };

    subtest "X2 ($tr): per-URI override of Subject" => sub {
        my $r = blast(tr => $tr, names => [qw(bill joe ted bob)],
            entries => sub { [ map { $_ eq 'joe' ? $_[0]{$_}->uri . '?Subject=Urgent' : $_[0]{$_}->uri } qw(bill joe ted bob) ] },
            build => { template => sipfrag(headers => [ Subject => 'Weekly' ]) });
        is(code_of($r), 200, 'answer 200');
        for my $n (qw(bill joe ted bob)) {
            my @g = @{ $r->{got}{$n} };
            is(scalar @g, 1, "$n: one MESSAGE");
            is($g[0] && $g[0]->header('subject'), $n eq 'joe' ? 'Urgent' : 'Weekly', "$n: Subject");
        }
    };

    subtest "X3 ($tr): dangerous overrides ignored" => sub {
        my $r = blast(tr => $tr, names => [qw(bill ted)],
            entries => sub { [ $_[0]{bill}->uri, $_[0]{ted}->uri . '?From=sip%3Amallory%40evil.example&Route=%3Csip%3Aevil.example%3E' ] });
        is(code_of($r), 200, 'answer 200');
        my ($m) = @{ $r->{got}{ted} };
        is(scalar @{ $r->{got}{ted} }, 1, 'ted still gets one MESSAGE');
        like($m && $m->header('from'), qr/alice/, "ted's From is Alice's");
        unlike($m && $m->raw, qr/mallory|evil\.example/, 'no mallory, no evil Route');
    };

    subtest "X4 ($tr): single recipient, the template names it" => sub {
        my $bill = $t->peer_for($tr, name => 'bill');
        my $r = blast(tr => $tr, names => [], list => resource_lists(entries => [ $bill->uri ]),
                      build => { template => sipfrag(uri => $bill->uri) });
        is(code_of($r), 200, 'answer 200');
        $t->serve([$bill], secs => 1);
        my @g = $t->requests($bill);
        is(scalar @g, 1, 'one MESSAGE to bill');
        is($g[0] && $g[0]->uri, $bill->uri, 'to bill');
    };

    subtest "X5 ($tr): unauthenticated, then with credentials" => sub {
        my $r = blast(tr => $tr, names => [qw(bill joe)], no_auth => 1, serve => 3);
        is(code_of($r), 401, '401 without credentials');
        ok(nothing_sent($r), 'no MESSAGE left in 3 s');
        my $r2 = blast(tr => $tr, names => [qw(bill joe)]);
        is(code_of($r2), 200, '200 with credentials');
        is_deeply(counts($r2), { bill => 1, joe => 1 }, 'one MESSAGE each');
    };

    subtest "X6 ($tr): consent missing" => sub {
        my $r = blast(tr => $tr, names => [qw(bill joe ted bob)], user => 'carol', serve => 2);
        is(code_of($r), 470, '470 Consent Needed');
        my $pm = $r->{res}{final} && $r->{res}{final}->header('permission-missing') // '';
        like($pm, qr/<sip:ted\@127\.0\.0\.1:\d+[^>]*>/, 'Permission-Missing names ted');
        unlike($pm, qr/bill|joe|bob/, 'and only ted');
        ok(nothing_sent($r), 'no MESSAGE to anyone');
    };

    subtest "X7 ($tr): duplicates" => sub {
        my $bob = $t->peer_for($tr, name => 'bob');
        (my $u = $bob->uri) =~ s/127\.0\.0\.1/localhost/;
        (my $U = $u) =~ s/localhost/LOCALHOST/;
        my $r = blast(tr => $tr, list => resource_lists(entries => [ $u, $U, $u ]));
        is(code_of($r), 200, 'answer 200');
        $t->serve([$bob], secs => 1.5);
        is(scalar(my @g = $t->requests($bob)), 1, 'one MESSAGE to bob');
    };

    subtest "X8 ($tr): oversize list" => sub {
        my $bill = $t->peer_for($tr, name => 'bill');
        my $n = $tr eq 'tcp' ? 10001 : 101;
        my $r = blast(tr => $tr, list => resource_lists(entries => [ $bill->uri, map { "sip:u$_\@127.0.0.1" } 1 .. $n - 1 ]), serve => 2);
        is(code_of($r), 403, "$n entries, limit 100: 403");
        is(scalar(my @g = $t->requests($bill)), 0, 'nothing sent');
    };

    subtest "X9 ($tr): broken references" => sub {
        my %case = (a => [ { cid => 'other@x' }, 400 ], b => [ { no_template => 1 }, 400 ],
                    c => [ { list_type => 'text/plain' }, 415 ]);
        for my $k (sort keys %case) {
            my ($b, $code) = @{ $case{$k} };
            my $bill = $t->peer_for($tr, name => 'bill');
            my %bb = %$b;
            my $r;
            if ($bb{cid}) {   # the Request-URI names a Content-ID no part has
                $r = blast(tr => $tr, list => resource_lists(entries => [ $bill->uri ]),
                           build => { list_param => 'cid:nothere%40client.example.org' }, serve => 1.5);
            } else {
                $r = blast(tr => $tr, list => resource_lists(entries => [ $bill->uri ]), build => \%bb, serve => 1.5);
            }
            is(code_of($r), $code, "($k) $code");
            is(scalar(my @g = $t->requests($bill)), 0, "($k) nothing sent");
        }
    };

    subtest "X10 ($tr): recursion guard" => sub {
        my $mark = $t->log_mark;
        my $r = blast(tr => $tr, names => [qw(bill)], entries => sub { [ $_[0]{bill}->uri,
            $t->exploder_uri . ';list=cid:x%40y', $t->exploder_uri, "sip:127.0.0.1:$port" ] });
        is(code_of($r), 200, 'answer 200');
        is_deeply(counts($r), { bill => 1 }, 'bill alone got a MESSAGE');
        ok($t->wait_log($mark, qr/dropped/, 3), 'the dropped entries are logged');
        my $r2 = blast(tr => $tr, names => [qw(bill)], build => { template => sipfrag(method => 'EXPLODE') });
        is(code_of($r2), 403, 'template EXPLODE: 403');
        ok(nothing_sent($r2), 'nothing sent');
    };
}

# ---------------------------------------------------------------- EX-n
subtest 'EX-1 EXPLODE accepted as method and CSeq method' => sub {
    my $r = blast(names => ['bill']);
    is(code_of($r), 200, 'answer 200');
    is($r->{res}{final}->header('cseq'), '2 EXPLODE', 'CSeq 2 EXPLODE in the answer');
};
subtest 'EX-2 list= raw and escaped' => sub {
    for my $esc (0, 1) {
        my $r = blast(names => ['bill'], build => { escape => $esc });
        is(code_of($r), 200, "escape=$esc: 200");
        is_deeply(counts($r), { bill => 1 }, "escape=$esc: one MESSAGE");
    }
};
subtest 'EX-3 cid: percent-decoded' => sub {
    my $r = blast(names => ['bill'], build => { list_param => 'cid:l%73t1%40client.example.org' });
    is(code_of($r), 200, 'cid:l%73t1%40... matches <lst1@...>');
    is_deeply(counts($r), { bill => 1 }, 'one MESSAGE');
};
subtest 'EX-4 parts in either order' => sub {
    my $r = blast(names => [qw(bill joe)], build => { order => 'list' });
    is(code_of($r), 200, 'list part first: 200');
    is_deeply(counts($r), { bill => 1, joe => 1 }, 'one each');
};
subtest "EX-5 the template's Content-Length governs its body" => sub {
    my $r = blast(names => ['bill'], build => { template => sipfrag(body => 'Hi all.TRAILING', content_length => 7) });
    is(code_of($r), 200, 'answer 200');
    is($r->{got}{bill}[0] && $r->{got}{bill}[0]->body, 'Hi all.', 'body cut at Content-Length');
};
subtest 'EX-6 namespace or not, nested lists flattened, entry-ref/external ignored' => sub {
    for my $ns (0, 1) {
        my $r = blast(names => [qw(bill joe)], entries => sub { [ $_[0]{bill}->uri,
            { raw => '<list name="inner"><entry uri="' . $_[0]{joe}->uri . '"/></list>' },
            { raw => '<entry-ref ref="lists/x"/>' }, { raw => '<external anchor="http://127.0.0.1:9/x"/>' },
            { raw => '<entry><display-name>no uri</display-name></entry>' } ] }, list_opts => { ns => $ns });
        is(code_of($r), 200, "ns=$ns: 200");
        is_deeply(counts($r), { bill => 1, joe => 1 }, "ns=$ns: one each");
    }
};
subtest 'EX-7 no credentials: 401, nothing sent' => sub {
    my $r = blast(names => ['bill'], no_auth => 1, serve => 3);
    is(code_of($r), 401, 'answer 401');
    ok($r->{res}{final}->header('www-authenticate'), 'with a challenge');
    ok(nothing_sent($r), 'nothing sent in 3 s');
};
subtest 'EX-8 authenticated but not authorized: 403' => sub {
    my $r = blast(names => ['bill'], user => 'carol', build => { uri => $t->exploder_uri('aliceonly') }, serve => 2);
    is(code_of($r), 403, 'carol at aliceonly: 403');
    ok(nothing_sent($r), 'nothing sent');
};
subtest 'EX-9 EX-10 one non-consenting target: nothing, 470 + Permission-Missing' => sub {
    my $c0 = $t->counters;
    my $r = blast(names => [qw(bill joe nobody)], serve => 2);
    is(code_of($r), 470, 'answer 470');
    like($r->{res}{final}->header('permission-missing') // '', qr/^<sip:nobody\@127\.0\.0\.1:\d+>$/, 'Permission-Missing: <nobody>');
    ok(nothing_sent($r), 'nothing sent');
    is($t->counters->{SipExplodeConsentRefused} - $c0->{SipExplodeConsentRefused}, 1, 'SipExplodeConsentRefused +1');
};
subtest 'EX-11 over SipExplodeMaxTargets: 403' => sub {
    my $r = blast(names => ['bill'], entries => sub { [ $_[0]{bill}->uri, map { "sip:u$_\@127.0.0.1" } 1 .. 100 ] }, serve => 2);
    is(code_of($r), 403, '101 entries: 403');
    ok(nothing_sent($r), 'nothing sent');
};
subtest 'EX-12 a URI twice (host case too): one request' => sub {
    my $r = blast(names => ['bill'], entries => sub { my $u = $_[0]{bill}->uri =~ s/127\.0\.0\.1/localhost/r;
                                                      [ $u, $u, $u =~ s/localhost/LocalHost/r ] });
    is(code_of($r), 200, 'answer 200');
    is_deeply(counts($r), { bill => 1 }, 'one request');
};
subtest 'EX-13 entries at the exploder dropped, EXPLODE templates refused' => sub {
    my $r = blast(names => ['bill'], entries => sub { [ $_[0]{bill}->uri, $t->exploder_uri, $t->exploder_uri . ';list=cid:a%40b' ] });
    is(code_of($r), 200, 'answer 200');
    is_deeply(counts($r), { bill => 1 }, 'bill only');
    my $r2 = blast(names => ['bill'], build => { template => sipfrag(method => 'EXPLODE') }, serve => 1);
    is(code_of($r2), 403, 'EXPLODE template: 403');
    my $r3 = blast(names => ['bill'], build => { template => sipfrag(method => 'INVITE') }, serve => 1);
    is(code_of($r3), 403, 'INVITE template (not in SipExplodeMethods): 403');
};
subtest 'EX-14 200 by default, before the fan-out' => sub {
    my $bill = $t->peer(name => 'bill');
    my $res = $t->explode(build => { list => resource_lists(entries => [ $bill->uri ]) });
    is($res->{final} && $res->{final}->code, 200, 'answer 200');
    my ($m) = $t->requests($bill, wait => 1);
    ok($m, 'bill got the MESSAGE');
    ok($m && $m->{rtime} >= $res->{t_final} - 0.2, 'it left no earlier than the answer') if $m;
    $t->serve([$bill], secs => 0.5);
};
subtest 'EX-15 SipExplode Off: 405, Allow without EXPLODE' => sub {
    my $r = blast(names => ['bill'], build => { uri => $t->exploder_uri('off') }, serve => 1);
    is(code_of($r), 405, 'answer 405');
    my $allow = $r->{res}{final}->header('allow') // '';
    ok(length $allow, "Allow: $allow");
    unlike($allow, qr/EXPLODE/, 'without EXPLODE');
    ok(nothing_sent($r), 'nothing sent');
};
subtest 'EX-16 no list=, unresolvable cid, no template, empty list: 400' => sub {
    for my $c ([ 'no list', { list_param => '', no_cid => 1 } ], [ 'bad cid', { list_param => 'cid:zz%40y' } ],
               [ 'no template', { no_template => 1 } ]) {
        my $r = blast(names => ['bill'], build => $c->[1], serve => 1);
        is(code_of($r), 400, "$c->[0]: 400");
        ok(nothing_sent($r), "$c->[0]: nothing sent");
    }
    my $r = blast(list => resource_lists(entries => []), serve => 0.5);
    is(code_of($r), 400, 'empty list: 400');
};
subtest 'EX-17 N targets, N requests; a user of ours: one per registered contact' => sub {
    my @d = map { $t->peer(name => "dave$_") } 1, 2;
    for my $p (@d) {
        my @rr = $t->udp_req($t->sip_request(method => 'REGISTER', uri => "sip:127.0.0.1:$port",
            to => "<sip:dave\@127.0.0.1:$port>", from => "<sip:dave\@127.0.0.1:$port>;tag=r1",
            headers => [ Contact => $p->contact, Expires => 300 ]));
        is($rr[-1] && $rr[-1]->code, 200, 'dave registered ' . $p->name);
    }
    my $r = blast(names => [qw(bill joe)], entries => sub { [ $_[0]{bill}->uri, $_[0]{joe}->uri, "sip:dave\@127.0.0.1:$port" ] });
    $t->serve(\@d, secs => 1);
    is(code_of($r), 200, 'answer 200');
    is_deeply(counts($r), { bill => 1, joe => 1 }, 'bill and joe one each');
    for my $p (@d) {
        my @g = $t->requests($p);
        is(scalar @g, 1, $p->name . ': one MESSAGE');
        is($g[0] && $g[0]->uri, $p->uri, $p->name . ': to its contact');
    }
};
subtest 'EX-18 ?Subject overrides the template' => sub {
    my $r = blast(names => [qw(bill bob)], entries => sub { [ $_[0]{bill}->uri . '?Subject=Hi%20Bob', $_[0]{bob}->uri ] },
                  build => { template => sipfrag(headers => [ Subject => 'Weekly' ]) });
    is($r->{got}{bill}[0] && $r->{got}{bill}[0]->header('subject'), 'Hi Bob', 'Subject: Hi Bob');
    is($r->{got}{bob}[0] && $r->{got}{bob}[0]->header('subject'), 'Weekly', 'the other keeps Weekly');
};
subtest 'EX-19 dangerous entry headers not applied' => sub {
    my $h = join '&', map { "$_=evil$_" } qw(Call-ID CSeq Via Record-Route Route Accept Allow Supported User-Agent Contact);
    my $r = blast(names => ['bill'], entries => sub { [ $_[0]{bill}->uri . "?From=sip%3Aevil%40x&$h" ] });
    is(code_of($r), 200, 'answer 200');
    my $m = $r->{got}{bill}[0];
    ok($m, 'sent anyway');
    unlike($m ? $m->head : '', qr/evil/i, 'no header from the entry applied');
};
subtest 'EX-20 URI parameters kept, .invalid never sent' => sub {
    my $r = blast(names => ['bill'], entries => sub { [ $_[0]{bill}->uri . ';ttl=1;foo=bar;maddr=127.0.0.1;method=INVITE' ] });
    my $m = $r->{got}{bill}[0];
    like($m ? $m->uri : '', qr/;ttl=1/, 'ttl'); like($m ? $m->uri : '', qr/;foo=bar/, 'unknown param');
    like($m ? $m->uri : '', qr/;maddr=127\.0\.0\.1/, 'maddr');
    unlike($m ? $m->uri : '', qr/method=/, 'method not copied');
    is($m && $m->method, 'MESSAGE', 'still MESSAGE');
    unlike($m ? $m->raw : '', qr/\.invalid/, 'no .invalid');
};
subtest 'EX-21 From, To, Call-ID, CSeq, Via, Max-Forwards (see X1)' => sub {
    my $r = blast(names => [qw(bill joe)]);
    my ($a, $b) = map { $r->{got}{$_}[0] } qw(bill joe);
    ok($a && $b, 'both sent');
    isnt($a->header('call-id'), $b->header('call-id'), 'distinct Call-IDs') if $a && $b;
    isnt($a->from_tag, $b->from_tag, 'distinct From tags') if $a && $b;
    is($_->header('max-forwards'), 70, 'Max-Forwards 70') for grep { $_ } $a, $b;
};
subtest 'EX-22 credentials for our realm not passed on, others are (RFC 5365)' => sub {
    my $other = 'Digest username="alice", realm="other.example", nonce="n", uri="sip:x", response="0123456789abcdef0123456789abcdef"';
    my $r = blast(names => ['bill'], kind => 'message', build => { headers => [ 'Proxy-Authorization' => $other ] });
    is(code_of($r), 202, 'answer 202');
    my $m = $r->{got}{bill}[0];
    is_deeply([ $m ? $m->headers('proxy-authorization') : () ], [ $other ], 'other realm forwarded unchanged');
    is(scalar(my @x = $m ? $m->headers('authorization') : ()), 0, 'our realm not forwarded');
};
subtest 'EX-23 a single part left goes without multipart' => sub {
    my $r = blast(names => ['bill'], kind => 'message');
    my $m = $r->{got}{bill}[0];
    like($m ? $m->header('content-type') : '', qr{^text/plain}i, 'text/plain');
    is($m && $m->body, 'Hi all.', 'the text');
};
subtest 'EX-24 X11 recipient-list-history: to/cc shown, bcc not, anonymized' => sub {
    my @n = qw(bill joe ted bob u1);
    my $r = blast(names => \@n, kind => 'message', entries => sub { my $p = shift;
        [ { uri => $p->{bill}->uri, copy => 'to' }, { uri => $p->{joe}->uri, copy => 'to' },
          { uri => $p->{ted}->uri, copy => 'cc' }, { uri => $p->{bob}->uri, copy => 'bcc' },
          { uri => $p->{u1}->uri, copy => 'to', anonymize => 'true' } ] });
    is(code_of($r), 202, 'answer 202');
    is_deeply(counts($r), { map { $_ => 1 } @n }, 'five MESSAGEs');
    my $m = $r->{got}{bill}[0] or return;
    my @parts = multipart_parts($m->header('content-type'), $m->body);
    my ($h) = grep { ($_->{headers}{'content-disposition'} // '') =~ /recipient-list-history/ } @parts;
    ok($h, 'a recipient-list-history part');
    like($h->{headers}{'content-disposition'}, qr/handling=optional/, 'handling=optional') if $h;
    my $x = $h ? $h->{body} : '';
    like($x, qr/\Q${\ $r->{p}{joe}->uri }/, 'to shown'); like($x, qr/\Q${\ $r->{p}{ted}->uri }/, 'cc shown');
    unlike($x, qr/\Q${\ $r->{p}{bob}->uri }/, 'bcc not shown'); unlike($x, qr/\Q${\ $r->{p}{u1}->uri }/, 'anonymized not shown');
    like($x, qr/sip:anonymous\@anonymous\.invalid/, 'anonymous entry'); like($x, qr/count="1"/, 'count="1"');
    my ($txt) = grep { ($_->{type} // '') =~ m{text/plain} } @parts;
    is($txt && $txt->{body}, 'Hi all.', 'and the text');
};
subtest 'EX-25 one log line per explosion with each final status' => sub {
    my $mark = $t->log_mark;
    my $r = blast(names => [qw(bill joe)]);
    my $l = $t->wait_log($mark, qr/sip explode: alice .*2 targets, 2 requests/, 5);
    like($l, qr/\Q${\ $r->{p}{$_}->uri }\E=200/, "$_=200") for qw(bill joe);
};
subtest 'EX-26 RFC 5365 MESSAGE: 202; SipExplode Off: 420' => sub {
    my $r = blast(names => [qw(bill joe)], kind => 'message');
    is(code_of($r), 202, 'answer 202');
    is_deeply(counts($r), { bill => 1, joe => 1 }, 'one each');
    my $r2 = blast(names => ['bill'], kind => 'message', build => { uri => $t->exploder_uri('off') }, serve => 1);
    is(code_of($r2), 420, 'Off: 420');
    like($r2->{res}{final}->header('unsupported') // '', qr/recipient-list-message/, 'Unsupported: recipient-list-message');
};
subtest 'EX-27 OPTIONS: Allow EXPLODE, Supported recipient-list-message' => sub {
    my @r = $t->transact('udp', method => 'OPTIONS', uri => $t->exploder_uri, sock => $t->udp_socket);
    like($r[-1]->header('allow') // '', qr/EXPLODE/, 'Allow has EXPLODE');
    like(join(',', $r[-1]->headers('supported')), qr/recipient-list-message/, 'Supported has the tag');
    @r = $t->transact('udp', method => 'OPTIONS', uri => $t->exploder_uri('off'), sock => $t->udp_socket);
    unlike($r[-1]->header('allow') // '', qr/EXPLODE/, 'not where Off');
};

$t->stop;

# SipExplodeResponse 202 and a SIP-CGI script deciding first
my $u = SipExplodeTest->new(vhost => ['SipExplodeResponse 202']);
$t = $u;
$u->cgi_script('exploder@127.0.0.1', 'n=$(grep -o "<entry " "$R/stdin" | wc -l); if [ "$n" -gt 2 ]; then printf "SIP/2.0 403 Too Many\n\n"; fi');
subtest 'EX-14 SipExplodeResponse 202; a SIP-CGI script sees EXPLODE first' => sub {
    my $r = blast(names => [qw(bill joe)]);
    is(code_of($r), 202, 'two entries: the script passes, 202');
    is_deeply(counts($r), { bill => 1, joe => 1 }, 'one each');
    my @runs = $u->runs('exploder@127.0.0.1');
    is($runs[0] && $runs[0]{env}{REQUEST_METHOD}, 'EXPLODE', 'REQUEST_METHOD=EXPLODE');
    like($runs[0] ? $runs[0]{stdin} : '', qr/resource-lists/, 'stdin = the body');
    my $r2 = blast(names => [qw(bill joe ted)], serve => 1.5);
    is(code_of($r2), 403, 'three entries: the script refuses, 403');
    ok(nothing_sent($r2), 'nothing sent');
};
$u->stop;
done_testing;
