#!/usr/bin/perl
# RFC 4475 SIP torture test messages, written from the RFC's descriptions
# (hosts rewritten to 127.0.0.1 so no traffic leaves the loopback; every
# Request-URI targets this server).  Valid messages must get a SIP answer,
# invalid ones an error (4xx/505) or silence.  After every message the
# engine is unchanged and a fresh OPTIONS is answered.
use strict;
use warnings;
use utf8;
use Test::More;
use Time::HiRes qw(time sleep);
use SipTest qw(parse_msg);

no utf8;
my $t = SipTest->new(
    scripts    => {},
    vhost_conf => "LimitRequestFieldSize 65536\nLimitRequestLine 65536",
);
my $port = $t->sip_port;
my $engine = $t->engine_pid;
ok($engine, 'engine running');

my $SDP = "v=0\r\no=mhandley 29739 7272939 IN IP4 192.0.2.3\r\ns=-\r\nc=IN IP4 192.0.2.4\r\n"
        . "t=0 0\r\nm=audio 49217 RTP/AVP 0 12\r\nm=video 3227 RTP/AVP 31\r\na=rtpmap:31 LPC\r\n";

# Placeholders: @HOST@ = 127.0.0.1:<sip port>, @VIA@ = 127.0.0.1:<client port>,
# @TR@ = UDP|TCP, @CL@ = length of the body, @SDP@ = the SDP body.
# Messages are written with LF and converted to CRLF (unless raw_eol).
my $long_user = 'very-long-user-name-' . ('x' x 3000);
my $long_tag  = 'longtag' . ('t' x 5000);
my $long_vias = join '', map { "Via: SIP/2.0/TCP sip$_.example.com;branch=z9hG4bK" . ('b' x 200) . "$_\n" } 1 .. 30;
my $long_hdr  = 'unknown-long-value;' . join(';', map { "unknown-long-parameter-name-$_ = unknown-long-parameter-value-$_" } 1 .. 150);

# name, kind (valid|invalid|response), transports, message, expectation
#   expect: arrayref of acceptable codes; 'drop'; 'drop-or-4xx'; 'any' (any final)
my @cases = (
  [ 'wsinv', [qw(udp tcp)], <<'M', [404] ],
INVITE sip:vivekg@@HOST@;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : "J Rosenberg \\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1@RND@
Content-Length   : @CL@
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /@TR@
    @VIA@;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:@HOST@;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \"\"" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

@SDP@
M
  # a raw NUL byte (inside a quoted To display name) is refused on purpose:
  # header values are C strings in the server and its scripts' environment
  [ 'intmeth', [qw(udp tcp)], <<"M", [400] ],
!interesting-Method0123456789_*+`.%indeed'~ sip:1_unusual.URI~(to-be!sure)&isn't+it\$/crazy?,/;;*:&it+has=1,weird!*pas\$wo~d_too.(doesn't-it)\@\@HOST\@ SIP/2.0
Via: SIP/2.0/\@TR\@ \@VIA\@;branch=z9hG4bK-.!%66*_+`'~\@RND\@
To: "BEL:\\\x07 NUL:\\\x00 DEL:\\\x7F" <sip:1_unusual.URI~(to-be!sure)&isn't+it\$/crazy?,/;;*\@example.com>
From: token1~` token2'+_ token3*%!.- <sip:mundane\@example.com>;fromParam''~+*_!.-%="\xd1\x80\xd0\xb0\xd0\xb1\xd0\xbe\xd1\x82\xd0\xb0\xd1\x8e\xd1\x89\xd0\xb8\xd0\xb9";tag=_token~1'+`*%!-.
Call-ID: intmeth.word%ZK-!.*_+'\@word`~)(><:\\/"][?}{\@RND\@
CSeq: 139122385 !interesting-Method0123456789_*+`.%indeed'~
Max-Forwards: 255
extensionHeader-!.%*+_`'~: \xef\xbb\xbf\xe5\xa4\xa7\xe5\x81\x9c\xe9\x9b\xbb
Content-Length: 0

M
  [ 'esc01', [qw(udp tcp)], <<'M', [404] ],
INVITE sip:sips%3Auser%40example.com@@HOST@ SIP/2.0
To: sip:%61lice@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234@RND@
CSeq: 234234 INVITE
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw@RND@
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: @CL@

@SDP@
M
  [ 'esc02', [qw(udp tcp)], <<'M', [404, 405, 501] ],
RE%47IST%45R sip:@HOST@ SIP/2.0
To: "%Z%45" <sip:resource@example.com>
From: "%Z%45" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf@RND@
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bK209793@RND@
CSeq: 29344 RE%47IST%45R
Max-Forwards: 70
Contact: <sip:alias1@host1.example.com>
C%6Fntact: <sip:alias2@host2.example.com>
Contact: <sip:alias3@host3.example.com>
l: 0

M
  [ 'escnull (refused on purpose)', [qw(udp tcp)], <<'M', [400] ],
REGISTER sip:@HOST@ SIP/2.0
To: sip:null-%00-null@example.com
From: sip:null-%00-null@example.com;tag=839923423
Max-Forwards: 70
Call-ID: escnull.39203ndfvkjdasfkq3w4otrq0adsfdfnavd@RND@
CSeq: 14398234 REGISTER
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw@RND@
Contact: <sip:%00@host5.example.com>
Contact: <sip:%00%00@host5.example.com>
L:0

M
  [ 'lwsdisp', [qw(udp tcp)], <<'M', [200] ],
OPTIONS sip:user@@HOST@ SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com@RND@
CSeq: 60 OPTIONS
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw@RND@
l: 0

M
  [ 'longreq', [qw(udp tcp)], <<"M", [404] ],
INVITE sip:$long_user\@\@HOST\@ SIP/2.0
To: "I have a user name of extremeextremeextremeextremeextremeextremeextremeextremeextremeextreme proportion"<sip:$long_user\@example.com:6000;unknownparam1=very${\ ('long' x 200)}value;longparamnamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamenamename=shortvalue;verylonglonglonglongparameternamewithnovalue>
F: sip:amazinglylongcallernameamazinglylongcallernameamazinglylongcallername\@example.net;tag=12${\ ('982' x 300)};unknownheaderparam${\ ('x' x 500)}=value;unknownValuelessparamname
Call-ID: longreq.onereallyreallyreallyreallylongcallid${\ ('reallylong' x 200)}\@RND\@
CSeq: 3882340 INVITE
Unknown-LongHeader: $long_hdr
Via: SIP/2.0/\@TR\@ \@VIA\@;branch=z9hG4bK${\ ('longbranch' x 100)}\@RND\@;unknownViaParam=${\ ('v' x 1000)}
$long_vias${\ join '', map { "Via: SIP/2.0/UDP sip$_.example.com;branch=z9hG4bKfirst$_\n" } 31 .. 40 }Max-Forwards: 70
Contact: <sip:amazinglylongcallernameamazinglylongcallername\@host5.example.net>
Content-Type: application/sdp
l: \@CL\@

\@SDP\@
M
  [ 'semiuri', [qw(udp tcp)], <<'M', [200] ],
OPTIONS sip:user;par=u%40example.net@@HOST@ SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj@RND@
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw@RND@
l: 0

M
  [ 'transports', [qw(udp tcp)], <<'M', [200] ],
OPTIONS sip:user@@HOST@ SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj@RND@
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw@RND@
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0

M
  [ 'mpart01', [qw(udp tcp)], <<"M", [404] ],
MESSAGE sip:kumiko\@\@HOST\@ SIP/2.0
Via: SIP/2.0/\@TR\@ \@VIA\@;branch=z9hG4bK3fd81e8\@RND\@
Max-Forwards: 70
From: "Kumiko" <sip:kumiko\@example.org>;tag=1ad4c1c2
To: <sip:kumiko\@example.com>
Call-ID: mpart01.9e31\@RND\@
CSeq: 23 MESSAGE
Content-Type: multipart/signed;
 protocol="application/pkcs7-signature";
 micalg=sha1; boundary="----=_Part_ffd4_1eb8"
Content-Length: \@CL\@

------=_Part_ffd4_1eb8\r
Content-Type: text/plain; charset=utf-8\r
\r
hello \xc3\xa9\x00\xff binary\r
------=_Part_ffd4_1eb8\r
Content-Type: application/pkcs7-signature; name=smime.p7s\r
Content-Transfer-Encoding: binary\r
\r
\x30\x82\x01\x00\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02\xa0\r\n\r\n\x00\x00\r
------=_Part_ffd4_1eb8--\r
M
  [ 'unreason (response)', [qw(udp tcp)], <<"M", 'drop' ],
SIP/2.0 200 = 2**3 * 5**2 \xd0\xbd\xd0\xbe \xd1\x81\xd1\x82\xd0\xbe \xd0\xb4\xd0\xb5\xd0\xb2\xd1\x8f\xd0\xbd\xd0\xbe\xd1\x81\xd1\x82\xd0\xbe - \xd0\xbf\xd1\x80\xd0\xbe\xd1\x81\xd1\x82\xd0\xbe\xd0\xb5
Via: SIP/2.0/\@TR\@ \@VIA\@;branch=z9hG4bK1324923\@RND\@
Call-ID: unreason.1234ksdfak3j2erwedfsASdf\@RND\@
CSeq: 35 INVITE
From: sip:user\@example.com;tag=11141343
To: sip:user\@example.edu;tag=2229
Content-Length: \@CL\@
Content-Type: application/sdp
Contact: <sip:user\@127.0.0.1>

\@SDP\@
M
  [ 'noreason (response)', [qw(udp tcp)], <<'M', 'drop' ],
SIP/2.0 100 
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bK-0293@RND@
Call-ID: noreason.asndj203insdf99223ndf@RND@
CSeq: 35 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@127.0.0.1>

M
  [ 'cparam01', [qw(udp tcp)], <<'M', 'any' ],
REGISTER sip:@HOST@ SIP/2.0
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw@RND@
Max-Forwards: 70
From: sip:watson@example.com;tag=DkfVgjkrtMwaerKKpe
To: sip:watson@example.com
Call-ID: cparam01.70710@saturn.example.com@RND@
CSeq: 2 REGISTER
Contact: sip:+19725552222@gw1.example.net;unknownparam
l: 0

M
  [ 'cparam02', [qw(udp tcp)], <<'M', 'any' ],
REGISTER sip:@HOST@ SIP/2.0
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw@RND@
Max-Forwards: 70
From: sip:watson@example.com;tag=838293
To: sip:watson@example.com
Call-ID: cparam02.70710@saturn.example.com@RND@
CSeq: 3 REGISTER
Contact: <sip:+19725552222@gw1.example.net;unknownparam>
l: 0

M
  [ 'regescrt', [qw(udp tcp)], <<'M', 'any' ],
REGISTER sip:@HOST@ SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=8
Max-Forwards: 70
Call-ID: regescrt.k345asrl3fdbv@192.0.2.1@RND@
CSeq: 14398234 REGISTER
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw@RND@
M: <sip:user@example.com?Route=%3Csip:sip.example.com%3E>
L:0

M
  [ 'zeromf', [qw(udp tcp)], <<'M', [200] ],
OPTIONS sip:user@@HOST@ SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=3ghsd41
Call-ID: zeromf.jfasdlfnm2o2l43r5u0asdfas@RND@
CSeq: 39234321 OPTIONS
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw2349i@RND@
Max-Forwards: 0
Content-Length: 0

M
  # issue 2 makes Max-Forwards mandatory in requests (RFC 3261 §8.1.1.6), so
  # this RFC 2543 INVITE without one gets 400 by design
  [ 'inv2543', [qw(udp tcp)], <<'M', [400] ],
INVITE sip:UserB@@HOST@ SIP/2.0
Via: SIP/2.0/@TR@ @VIA@
From: <sip:+13035551111@ift.client.example.net;user=phone>
Record-Route: <sip:UserB@example.com;maddr=ss1.example.com>
To: sip:+16505552222@ss1.example.net;user=phone
Call-ID: inv2543.1717@ift.client.example.com@RND@
CSeq: 56 INVITE
Content-Type: application/sdp
Content-Length: @CL@

@SDP@
M
  [ 'badbranch', [qw(udp tcp)], <<'M', [200] ],
OPTIONS sip:user@@HOST@ SIP/2.0
To: sip:user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bK
Accept: application/sdp
Call-ID: badbranch.sadonfo23i420jv0as0derf3j3n@RND@
CSeq: 8 OPTIONS
l: 0

M
  [ 'bext01 (unknown Require)', [qw(udp tcp)], <<'M', [420] ],
OPTIONS sip:user@@HOST@ SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.net;tag=242etr
Max-Forwards: 6
Call-ID: bext01.0ha0isndaksdj@RND@
Require: nothingSupportedHere
CSeq: 8 OPTIONS
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw@RND@
Content-Length: 0

M
  [ 'invut (unknown body type)', [qw(udp tcp)], <<'M', [404, 415] ],
INVITE sip:user@@HOST@ SIP/2.0
Contact: <sip:caller@host5.example.net>
To: sip:j.user@example.com
From: sip:caller@example.net;tag=8392034
Max-Forwards: 70
Call-ID: invut.0ha0isndaksdjadsfij34n23d@RND@
CSeq: 235448 INVITE
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw@RND@
Content-Type: application/unknownformat
Content-Length: @CL@

<audio>
 <pcmu port="443"/>
</audio>
M
  [ 'unksm2 (non-SIP To/From/Contact in REGISTER)', [qw(udp tcp)], <<'M', '4xx' ],
REGISTER sip:@HOST@ SIP/2.0
To: isbn:2983792873
From: <http://www.example.com>;tag=3234233
Call-ID: unksm2.daksdj@hyphenated-host.example.com@RND@
CSeq: 234902 REGISTER
Max-Forwards: 70
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw@RND@
Contact: <name:John_Smith>
l: 0

M
  [ 'mismatch02 (unknown method, CSeq INVITE)', [qw(udp tcp)], <<'M', [400] ],
NEWMETHOD sip:user@@HOST@ SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch02.dj0234sxdfl3@RND@
CSeq: 8 INVITE
Contact: <sip:caller@host.example.net>
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw@RND@
Content-Type: application/sdp
l: @CL@

@SDP@
M
  [ 'multi01 (two To/From/Call-ID/CSeq)', [qw(udp tcp)], <<'M', 'drop-or-4xx' ],
INVITE sip:user@@HOST@ SIP/2.0
Contact: <sip:caller@host25.example.net>
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw@RND@
Max-Forwards: 70
CSeq: 5 INVITE
Call-ID: multi01.98asdh@192.0.2.1@RND@
CSeq: 59 INVITE
Call-ID: multi01.98asdh@192.0.2.2@RND@
From: sip:caller@example.com;tag=3413415
To: sip:user@example.com
To: sip:other@example.net
From: sip:caller@example.net;tag=2923420123
Content-Type: application/sdp
l: @CL@

@SDP@
M
  [ 'escruri (escaped headers in Request-URI)', [qw(udp tcp)], <<'M', 'drop-or-4xx' ],
INVITE sip:user@@HOST@?Route=%3Csip:example.com%3E SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=341518
Max-Forwards: 7
Contact: <sip:caller@host39923.example.net>
Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5@RND@
CSeq: 149209342 INVITE
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw@RND@
Content-Type: application/sdp
Content-Length: @CL@

@SDP@
M
  # ---------------------------------------------------------------- invalid
  [ 'badinv01', [qw(udp)], <<'M', 'drop-or-4xx' ],
INVITE sip:user@@HOST@ SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=134161461246
Max-Forwards: 7
Call-ID: badinv01.0ha0isndaksdjasdf3234nas@RND@
CSeq: 8 INVITE
Via: SIP/2.0/@TR@ @VIA@;;,;,,
Contact: "Joe" <sip:joe@example.org>;;;;
Content-Length: 152
Content-Type: application/sdp

@SDP@
M
  [ 'clerr', [qw(udp)], <<'M', [400] ],
INVITE sip:user@@HOST@ SIP/2.0
Max-Forwards: 80
To: sip:j.user@example.com
From: sip:caller@example.net;tag=93942939o2
Contact: <sip:caller@hungry.example.net>
Call-ID: clerr.0ha0isndaksdjweiafasdk3@RND@
CSeq: 8 INVITE
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bK-39234-23523@RND@
Content-Type: application/sdp
Content-Length: 9999

@SDP@
M
  [ 'ncl', [qw(udp tcp)], <<'M', [400] ],
INVITE sip:user@@HOST@ SIP/2.0
Max-Forwards: 254
To: sip:j.user@example.com
From: sip:caller@example.net;tag=32394234
Call-ID: ncl.0ha0isndaksdj2193423r542w35@RND@
CSeq: 0 INVITE
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw@RND@
Contact: <sip:caller@example53.example.net>
Content-Type: application/sdp
Content-Length: -999

@SDP@
M
  [ 'scalar02', [qw(udp tcp)], <<"M", [400] ],
REGISTER sip:\@HOST\@ SIP/2.0
Via: SIP/2.0/\@TR\@ \@VIA\@;branch=z9hG4bK342sdfoi3\@RND\@
To: <sip:user\@example.com>
From: <sip:user\@example.com>;tag=239232jh3
CSeq: 36893488147419103232 REGISTER
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32\@RND\@
Max-Forwards: 300
Expires: 1${\ ('0' x 100)}
Contact: <sip:user\@host129.example.com>;expires=280297596632815
Content-Length: 0

M
  [ 'quotbal', [qw(udp tcp)], <<'M', 'drop-or-4xx' ],
INVITE sip:user@@HOST@ SIP/2.0
To: "Mr. J. User <sip:j.user@example.com>
From: sip:caller@example.net;tag=93334
Max-Forwards: 10
Call-ID: quotbal.aksdj@RND@
Contact: <sip:caller@host59.example.net>
CSeq: 0 INVITE
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw39234@RND@
Content-Type: application/sdp
Content-Length: @CL@

@SDP@
M
  [ 'ltgtruri', [qw(udp tcp)], <<'M', 'drop-or-4xx' ],
INVITE <sip:user@@HOST@> SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=39291
Max-Forwards: 23
Call-ID: ltgtruri.1@192.0.2.5@RND@
CSeq: 1 INVITE
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKltgt@RND@
Contact: <sip:caller@host5.example.net>
Content-Type: application/sdp
Content-Length: @CL@

@SDP@
M
  [ 'lwsruri', [qw(udp tcp)], <<'M', 'drop-or-4xx' ],
INVITE sip:user@@HOST@; lr SIP/2.0
To: sip:user@example.com;tag=3xfe-9921883-z9f
From: sip:caller@example.net;tag=231413434
Max-Forwards: 5
Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423@RND@
CSeq: 2130706432 INVITE
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw2395@RND@
Contact: <sip:caller@host1.example.net>
Content-Type: application/sdp
Content-Length: @CL@

@SDP@
M
  [ 'lwsstart', [qw(udp tcp)], <<'M', 'drop-or-4xx' ],
INVITE  sip:user@@HOST@  SIP/2.0
Max-Forwards: 57
To: sip:user@example.com;tag=3xfe-9921883-z9f
From: sip:caller@example.net;tag=231413434
Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@RND@
CSeq: 1002 INVITE
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw@RND@
Contact: <sip:caller@host1.example.net>
Content-Type: application/sdp
Content-Length: @CL@

@SDP@
M
  [ 'trws', [qw(udp tcp)], <<'M', 'drop-or-4xx' ],
OPTIONS sip:remote-target@@HOST@ SIP/2.0  
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw@RND@
Max-Forwards: 70
From: <sip:remote-target@example.com>;tag=9242
To: <sip:remote-target@example.com>
Call-ID: trws.oicu34ngkv@RND@
CSeq: 10 OPTIONS
Content-Length: 0

M
  [ 'mismatch01', [qw(udp tcp)], <<'M', [400] ],
OPTIONS sip:user@@HOST@ SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch01.dj0234sxdfl3@RND@
CSeq: 8 INVITE
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw@RND@
l: 0

M
  [ 'badvers', [qw(udp tcp)], <<'M', [505] ],
OPTIONS sip:t.watson@@HOST@ SIP/7.0
Via:     SIP/7.0/@TR@ @VIA@;branch=z9hG4bKkdjuw@RND@
Max-Forwards:     70
To:     t.watson <sip:t.watson@example.org>
From:     Watson <sip:t.watson@example.org>;tag=4331
Call-ID:     badvers.kdjuwkdjuw@RND@
CSeq:     8 OPTIONS
l: 0

M
  [ 'bigcode (response)', [qw(udp tcp)], <<'M', 'drop' ],
SIP/2.0 4294967301 better not break the receiver
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bK2398ndaoe@RND@
Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i@RND@
CSeq: 353494 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@127.0.0.1>

M
  [ 'unkscm', [qw(udp tcp)], <<'M', [416] ],
OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34@RND@
CSeq: 3923423 OPTIONS
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw39234@RND@
Content-Length: 0

M
  [ 'novelsc', [qw(udp tcp)], <<'M', [416] ],
OPTIONS soap.beep://127.0.0.1:3002 SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: novelsc.asdfasser0q239nwsdfasdkl34@RND@
CSeq: 3923423 OPTIONS
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdjuw39234@RND@
Content-Length: 0

M
  [ 'insuf', [qw(udp tcp)], <<'M', [400] ],
INVITE sip:user@@HOST@ SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bKkdj.insuf@RND@
Content-Type: application/sdp
l: @CL@

@SDP@
M
  [ 'mcl01', [qw(udp)], <<'M', 'any-or-drop' ],
OPTIONS sip:user@@HOST@ SIP/2.0
Via: SIP/2.0/@TR@ @VIA@;branch=z9hG4bK293423@RND@
To: sip:user@example.com
From: sip:other@example.net;tag=3923942
Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf@RND@
CSeq: 15932 OPTIONS
Content-Length: 13
Max-Forwards: 60
Content-Length: 5
Content-Type: text/plain

There's no way to know how many octets are supposed to be here.
M
);

sub build {
    my ($msg, $tr, $sock) = @_;
    my $vport = $tr eq 'udp' ? $sock->sockport : $sock->sockport;
    my $rnd = '.' . SipTest::rand_token(6);
    my ($head, $body) = split /\n\n/, $msg, 2;
    $body //= '';
    $head =~ s/\r?\n/\r\n/g;
    $body =~ s/\@SDP\@\n?/$SDP/;
    $body =~ s/(?<!\r)\n/\r\n/g;
    my $cl = length $body;
    for ($head) {
        s/\@HOST\@/127.0.0.1:$port/g;
        s/\@VIA\@/127.0.0.1:$vport/g;
        s/\@TR\@/uc $tr/ge;
        s/\@CL\@/$cl/g;
        s/\@RND\@/$rnd/g;
    }
    return "$head\r\n\r\n$body";
}

sub collect {
    my ($tr, $s, $wait) = @_;
    my @r;
    if ($tr eq 'udp') {
        while (defined(my $d = $t->udp_recv($s, @r ? 0.3 : $wait))) {
            my $m = parse_msg($d);
            push @r, $m;
            last if $m->is_final;
        }
    } else {
        while (my $m = $t->read_response($s, @r ? 0.3 : $wait)) {
            push @r, $m;
            last if $m->is_final;
        }
    }
    return @r;
}

sub send_ack {
    my ($tr, $s, $raw, $resp) = @_;
    my ($ruri) = $raw =~ /^\S+\s+(\S+)/;
    my ($num) = ($resp->header('cseq') // '') =~ /(\d+)/;
    return unless defined $num;
    # no ACK when the answer could not mirror the dialog headers (e.g. insuf)
    for my $h (qw(via from to call-id)) { return unless defined $resp->header($h) }
    my $ack = "ACK $ruri SIP/2.0\r\nVia: " . $resp->header('via') . "\r\nMax-Forwards: 70\r\n"
            . "From: " . $resp->header('from') . "\r\nTo: " . $resp->header('to') . "\r\n"
            . "Call-ID: " . $resp->header('call-id') . "\r\nCSeq: $num ACK\r\nContent-Length: 0\r\n\r\n";
    $tr eq 'udp' ? $t->udp_send($ack, sock => $s) : $t->send_raw($s, $ack);
}

my @odd;
for my $c (@cases) {
    my ($name, $trs, $msg, $expect) = @$c;
    for my $tr (@$trs) {
        my $label = "$tr: $name";
        my $s = $tr eq 'udp' ? $t->udp_socket : $t->tcp_connect;
        my $raw = build($msg, $tr, $s);
        if ($tr eq 'udp') { $t->udp_send($raw, sock => $s) } else { $t->send_raw($s, $raw) }
        my $dropish = !ref $expect && $expect =~ /drop/;
        my @r = collect($tr, $s, $dropish ? 1.5 : 3);
        my @codes = map { $_->code } @r;
        my @final = grep { $_->is_final } @r;
        my $code = @final ? $final[-1]->code : 'none';
        if (@final && $raw =~ /^INVITE /) { send_ack($tr, $s, $raw, $final[-1]) }
        my $ok;
        if (ref $expect) {
            $ok = ok((grep { $_ eq $code } @$expect), "$label -> @$expect");
        } elsif ($expect eq 'any') {
            $ok = ok(@final, "$label -> a final answer ($code)");
        } elsif ($expect eq '4xx') {
            $ok = ok(@final && $code =~ /^4\d\d$/, "$label -> 4xx ($code)");
        } elsif ($expect eq 'any-or-drop') {
            $ok = ok(1, "$label -> answered or dropped ($code)");
        } elsif ($expect eq 'drop') {
            $ok = ok(!@r, "$label -> no answer");
        } else {    # drop-or-4xx
            $ok = ok(!@r || (@final == 1 && $code =~ /^4\d\d$/), "$label -> no answer or 4xx ($code)");
        }
        unless ($ok) {
            diag("got: @codes" . (@r ? "\n" . substr($r[-1]->raw, 0, 600) : ''));
            push @odd, "$label: got '@codes'";
        }
        note("$label: got @codes") if $ok;
        close $s;
        is($t->engine_pid, $engine, "$label: engine pid unchanged (no crash)");
        ok($t->options_ok('udp'), "$label: fresh OPTIONS answered");
    }
}

# dblreq: two requests in one datagram; the first is framed by Content-Length
# and answered, the trailing INVITE is ignored.
{
    my $s = $t->udp_socket;
    my $first = build(<<'M', 'udp', $s);
REGISTER sip:@HOST@ SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412@RND@
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP @VIA@;branch=z9hG4bKon23099@RND@
Content-Length: 0

M
    my $second = build(<<'M', 'udp', $s);
INVITE sip:joe@@HOST@ SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15@RND@
CSeq: 8 INVITE
Via: SIP/2.0/UDP @VIA@;branch=z9hG4bKkdjuw380234@RND@
Content-Type: application/sdp
Content-Length: @CL@

@SDP@
M
    $t->udp_send($first . $second, sock => $s);
    my @r;
    while (defined(my $d = $t->udp_recv($s, @r ? 1 : 3))) { push @r, parse_msg($d) }
    my @final = grep { $_->is_final } @r;
    ok(@final >= 1, 'udp: dblreq first request answered') or push @odd, 'dblreq: no answer';
    my @inv = grep { ($_->header('cseq') // '') =~ /INVITE/ } @r;
    ok(!@inv, 'udp: dblreq trailing INVITE not processed')
        or push @odd, 'dblreq: second request answered: ' . join(' ', map { $_->code } @inv);
    like($final[0] ? $final[0]->header('cseq') : '', qr/REGISTER/, 'udp: dblreq answer is for the REGISTER');
    send_ack('udp', $s, $second, $_) for grep { $_->is_final } @inv;
    is($t->engine_pid, $engine, 'udp: dblreq engine unchanged');
    ok($t->options_ok('udp'), 'udp: dblreq fresh OPTIONS answered');
}

diag("unexpected answers:\n  " . join("\n  ", @odd)) if @odd;
is($t->engine_pid, $engine, 'engine never restarted');
$t->dump_log_on_failure;
$t->stop;
done_testing;
