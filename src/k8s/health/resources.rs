//! Rules for the other kinds with a status worth waiting for, and the generic rule for the rest
//! (custom resources included).

use serde_json::Value;

use super::{Health, condition, conditions, detailed, explain, get, progressing, text};

pub(super) fn claim(obj: &Value) -> Health {
    match text(obj, &["status", "phase"]) {
        Some("Bound") => Health::Healthy,
        // kstatus keeps waiting; a claim whose volume is gone does not come back.
        Some("Lost") => Health::Failed("claim lost its volume".into()),
        other => progressing(format!(
            "claim is {}, not Bound",
            other.unwrap_or("Pending")
        )),
    }
}

/// A LoadBalancer needs an address (kstatus: only a cluster IP); other Services are ready at once.
pub(super) fn service(obj: &Value) -> Health {
    if text(obj, &["spec", "type"]) != Some("LoadBalancer") {
        return Health::Healthy;
    }
    let has_address = get(obj, &["status", "loadBalancer", "ingress"])
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if has_address {
        Health::Healthy
    } else {
        progressing("load balancer has no address yet")
    }
}

pub(super) fn crd(obj: &Value) -> Health {
    for c in conditions(obj) {
        let status = text(c, &["status"]);
        match text(c, &["type"]) {
            Some("NamesAccepted") if status == Some("False") => {
                return Health::Failed(detailed("names not accepted", &explain(c)));
            }
            Some("Established") if status == Some("True") => return Health::Healthy,
            Some("Established")
                if status == Some("False") && text(c, &["reason"]) != Some("Installing") =>
            {
                return Health::Failed(detailed("not established", &explain(c)));
            }
            _ => {}
        }
    }
    progressing("CustomResourceDefinition being installed")
}

/// Its group's discovery works only once Available (kstatus reads only Ready, which it lacks).
pub(super) fn api_service(obj: &Value) -> Health {
    available(obj).unwrap_or_else(|| progressing("APIService not Available yet"))
}

/// Ready decides, as in kstatus; without Ready, an Available condition does (kstatus: healthy).
pub(super) fn generic(obj: &Value) -> Health {
    for c in conditions(obj).filter(|c| text(c, &["type"]) == Some("Ready")) {
        match text(c, &["status"]) {
            Some("True") => return Health::Healthy,
            Some("False" | "Unknown") => return progressing(detailed("not ready", &explain(c))),
            _ => {}
        }
    }
    available(obj).unwrap_or(Health::Healthy)
}

fn available(obj: &Value) -> Option<Health> {
    let c = condition(obj, "Available")?;
    Some(if text(c, &["status"]) == Some("True") {
        Health::Healthy
    } else {
        progressing(detailed("not Available", &explain(c)))
    })
}

#[cfg(test)]
mod tests {
    use super::super::assess;
    use super::*;
    use serde_json::json;

    #[test]
    fn claims() {
        let phase = |p: &str| json!({"status": {"phase": p}});
        assert_eq!(
            assess("", "PersistentVolumeClaim", &phase("Bound")),
            Health::Healthy
        );
        assert!(matches!(
            assess("", "PersistentVolumeClaim", &phase("Pending")),
            Health::Progressing(_)
        ));
        assert!(matches!(
            assess("", "PersistentVolumeClaim", &phase("Lost")),
            Health::Failed(_)
        ));
        assert!(matches!(
            assess("", "PersistentVolumeClaim", &json!({})),
            Health::Progressing(_)
        ));
    }

    #[test]
    fn load_balancers_need_an_address() {
        let lb = json!({"spec": {"type": "LoadBalancer", "clusterIP": "10.0.0.7"}, "status": {"loadBalancer": {}}});
        assert!(
            matches!(assess("", "Service", &lb), Health::Progressing(m) if m.contains("no address"))
        );
        let ready = json!({"spec": {"type": "LoadBalancer"}, "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}});
        assert_eq!(assess("", "Service", &ready), Health::Healthy);
        assert_eq!(
            assess("", "Service", &json!({"spec": {"type": "NodePort"}})),
            Health::Healthy
        );
    }

    #[test]
    fn crds_fail_on_rejected_names() {
        let crd = |conds: Value| json!({"status": {"conditions": conds}});
        let g = "apiextensions.k8s.io";
        let k = "CustomResourceDefinition";
        let rejected = crd(
            json!([{"type": "NamesAccepted", "status": "False", "reason": "ListKindConflict",
            "message": "\"WidgetList\" is already in use"}]),
        );
        assert_eq!(
            assess(g, k, &rejected),
            Health::Failed(
                "names not accepted: ListKindConflict: \"WidgetList\" is already in use".into()
            )
        );
        let installing = crd(json!([{"type": "NamesAccepted", "status": "True"},
            {"type": "Established", "status": "False", "reason": "Installing"}]));
        assert!(matches!(assess(g, k, &installing), Health::Progressing(_)));
        let not_established =
            crd(json!([{"type": "Established", "status": "False", "reason": "Terminating"}]));
        assert!(matches!(assess(g, k, &not_established), Health::Failed(_)));
        let established = crd(json!([{"type": "Established", "status": "True"}]));
        assert_eq!(assess(g, k, &established), Health::Healthy);
        assert!(matches!(assess(g, k, &json!({})), Health::Progressing(_)));
    }

    #[test]
    fn ready_then_available_conditions() {
        let conds = |c: Value| json!({"status": {"conditions": c}});
        let not_ready = conds(
            json!([{"type": "Ready", "status": "False", "reason": "Waiting", "message": "db"}]),
        );
        assert_eq!(
            assess("example.com", "Widget", &not_ready),
            Health::Progressing("not ready: Waiting: db".into())
        );
        let ready_not_available = conds(
            json!([{"type": "Available", "status": "False"}, {"type": "Ready", "status": "True"}]),
        );
        assert_eq!(
            assess("example.com", "Widget", &ready_not_available),
            Health::Healthy
        );
        let unavailable =
            conds(json!([{"type": "Available", "status": "False", "reason": "MissingEndpoints"}]));
        assert!(matches!(
            assess("example.com", "Widget", &unavailable),
            Health::Progressing(_)
        ));
        assert!(matches!(
            assess("apiregistration.k8s.io", "APIService", &unavailable),
            Health::Progressing(_)
        ));
        assert!(matches!(
            assess("apiregistration.k8s.io", "APIService", &json!({})),
            Health::Progressing(_)
        ));
        assert_eq!(
            assess("example.com", "Widget", &json!({"spec": {}})),
            Health::Healthy
        );
    }
}
