//! SNP report, SNP certificate table, TDX quote (`tsuba_protocols::evidence`).

use tsuba_protocols::evidence::{
    Claims, GUID_ARK, GUID_ASK, GUID_VCEK, GUID_VLEK, SnpCertTable, SnpReport, TdxQuote,
};

/// `SnpReport::parse`; a parsed report must survive `to_bytes` and parse back equal.
pub(crate) fn snp_report(data: &[u8]) {
    let Ok(report) = SnpReport::parse(data) else {
        return;
    };
    let _ = report.tcb_layout();
    let _ = Claims::from(&report);
    let again = SnpReport::parse(&report.to_bytes())
        .unwrap_or_else(|e| panic!("a parsed snp report does not parse back: {e}"));
    assert_eq!(report, again, "snp report changed across to_bytes/parse");
}

/// `SnpCertTable::parse`; a parsed table must serialise and parse back equal.
pub(crate) fn snp_cert_table(data: &[u8]) {
    let Ok(table) = SnpCertTable::parse(data) else {
        return;
    };
    for guid in [GUID_ARK, GUID_ASK, GUID_VCEK, GUID_VLEK] {
        let _ = table.get(&guid);
    }
    let bytes = table
        .to_bytes()
        .unwrap_or_else(|e| panic!("a parsed certificate table does not serialise: {e}"));
    let again = SnpCertTable::parse(&bytes)
        .unwrap_or_else(|e| panic!("a serialised certificate table does not parse: {e}"));
    assert_eq!(
        table, again,
        "certificate table changed across to_bytes/parse"
    );
}

/// `TdxQuote::parse`; a parsed quote must serialise and parse back equal.
pub(crate) fn tdx_quote(data: &[u8]) {
    let Ok(quote) = TdxQuote::parse(data) else {
        return;
    };
    let _ = Claims::from(&quote);
    let _ = quote.signature.pck_chain_pem();
    let _ = quote.signed_bytes();
    let bytes = quote
        .to_bytes()
        .unwrap_or_else(|e| panic!("a parsed tdx quote does not serialise: {e}"));
    let again = TdxQuote::parse(&bytes)
        .unwrap_or_else(|e| panic!("a serialised quote does not parse: {e}"));
    assert_eq!(quote, again, "tdx quote changed across to_bytes/parse");
}
