// Differential harness: calls libmodsecurity 3.0.9's exported transformation classes directly.
// stdin: lines "<name> <hex input>"; stdout: one line "<hex output>" per input line.
// Build: g++ -O1 direct.cc -o direct -lmodsecurity  (evaluate() ignores `this`, so a zeroed buffer stands in for the object)
#include <modsecurity/modsecurity.h>
#include <modsecurity/rules_set.h>
#include <modsecurity/transaction.h>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <new>
#include <string>

namespace modsecurity { namespace actions { namespace transformations {
#define T(C) class C { public: std::string evaluate(const std::string &v, Transaction *t); };
T(LowerCase) T(UpperCase) T(UrlDecode) T(UrlDecodeUni) T(HtmlEntityDecode) T(JsDecode) T(CssDecode)
T(CmdLine) T(CompressWhitespace) T(RemoveWhitespace) T(RemoveNulls) T(ReplaceNulls)
T(ReplaceComments) T(RemoveComments) T(RemoveCommentsChar) T(NormalisePath) T(NormalisePathWin)
T(Base64Decode) T(Base64DecodeExt) T(Base64Encode) T(HexDecode) T(HexEncode) T(SqlHexDecode)
T(Utf8ToUnicode) T(Length) T(Trim) T(TrimLeft) T(TrimRight) T(EscapeSeqDecode)
T(ParityEven7bit) T(ParityOdd7bit) T(ParityZero7bit) T(Md5) T(Sha1) T(UrlEncode)
#undef T
}}}
using namespace modsecurity::actions::transformations;

static std::string unhex(const std::string &h) {
    std::string o;
    for (size_t i = 0; i + 1 < h.size(); i += 2) o.push_back((char)std::stoi(h.substr(i, 2), nullptr, 16));
    return o;
}
static std::string hex(const std::string &s) {
    static const char *d = "0123456789abcdef";
    std::string o;
    for (unsigned char c : s) { o.push_back(d[c >> 4]); o.push_back(d[c & 15]); }
    return o;
}

alignas(64) static unsigned char objbuf[4096];

int main() {
    modsecurity::ModSecurity *ms = modsecurity::msc_init();
    modsecurity::RulesSet *rules = modsecurity::msc_create_rules_set();
    modsecurity::Transaction *tx = modsecurity::msc_new_transaction(ms, rules, nullptr);
    std::string line;
    while (std::getline(std::cin, line)) {
        size_t sp = line.find(' ');
        std::string name = line.substr(0, sp);
        std::string in = sp == std::string::npos ? "" : unhex(line.substr(sp + 1));
        std::string out;
        std::string a = "t:" + name;
        memset(objbuf, 0, sizeof objbuf);
#define R(N, C) else if (name == N) { C *o = reinterpret_cast<C *>(objbuf); out = o->evaluate(in, tx); }
        if (0) {}
        R("lowercase", LowerCase) R("uppercase", UpperCase) R("urlDecode", UrlDecode)
        R("urlDecodeUni", UrlDecodeUni) R("htmlEntityDecode", HtmlEntityDecode)
        R("jsDecode", JsDecode) R("cssDecode", CssDecode) R("cmdLine", CmdLine)
        R("compressWhitespace", CompressWhitespace) R("removeWhitespace", RemoveWhitespace)
        R("removeNulls", RemoveNulls) R("replaceNulls", ReplaceNulls)
        R("replaceComments", ReplaceComments) R("removeComments", RemoveComments)
        R("removeCommentsChar", RemoveCommentsChar) R("normalizePath", NormalisePath)
        R("normalizePathWin", NormalisePathWin) R("base64Decode", Base64Decode)
        R("base64DecodeExt", Base64DecodeExt) R("base64Encode", Base64Encode)
        R("hexDecode", HexDecode) R("hexEncode", HexEncode) R("sqlHexDecode", SqlHexDecode)
        R("utf8toUnicode", Utf8ToUnicode) R("length", Length) R("trim", Trim)
        R("trimLeft", TrimLeft) R("trimRight", TrimRight) R("escapeSeqDecode", EscapeSeqDecode)
        R("parityEven7bit", ParityEven7bit) R("parityOdd7bit", ParityOdd7bit)
        R("parityZero7bit", ParityZero7bit) R("md5", Md5) R("sha1", Sha1) R("urlEncode", UrlEncode)
        else { fprintf(stderr, "unknown %s\n", name.c_str()); return 2; }
        std::cout << hex(out) << "\n";
    }
    return 0;
}
