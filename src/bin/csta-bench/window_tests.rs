//! Reading counters from a Prometheus text exposition.

use super::window::sum_of;

#[test]
fn sums_every_series_of_one_metric_only() {
    let text = "# HELP csta_router_forwarded_requests_total x\n\
# TYPE csta_router_forwarded_requests_total counter\n\
csta_router_forwarded_requests_total{switch=\"sw1\",result=\"ok\"} 12\n\
csta_router_forwarded_requests_total{switch=\"sw2\",result=\"54\"} 3\n\
csta_router_forwarded_requests_total_other 100\n\
csta_router_forwarded_request_seconds_count{switch=\"sw1\"} 7\n";
    assert_eq!(sum_of(text, "csta_router_forwarded_requests_total"), 15.0);
    assert_eq!(
        sum_of(text, "csta_router_private_service_requests_total"),
        0.0
    );
    assert_eq!(sum_of("plain 4.5\n", "plain"), 4.5);
}
