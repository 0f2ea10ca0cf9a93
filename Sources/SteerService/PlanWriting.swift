import SteerCore
import SteerEngine
import SteerProtocol

/// The planner's answer fragments (`explain` on search and recommend, `plans` in `stats`).
extension JSONWriter {
    /// `,"explain":{"plan":…,"matches":…,"items":…,"selectivity":…,"exact_threshold":…,"widenings":…,
    /// "exact_fallbacks":…,"scanned_records":…,"oversample":…,"rescored":…,"cached_filter":…}` (`matches` and `selectivity` are null when unfiltered).
    public mutating func explainField(_ plan: SearchPlan) {
        raw(",\"explain\":{\"plan\":")
        string(plan.kind.rawValue)
        raw(",\"matches\":")
        if let matches = plan.matches { int(matches) } else { raw("null") }
        raw(",\"items\":")
        int(plan.items)
        raw(",\"selectivity\":")
        if let selectivity = plan.selectivity { value(.double(selectivity)) } else { raw("null") }
        raw(",\"exact_threshold\":")
        int(plan.exactThreshold)
        raw(",\"widenings\":")
        int(plan.widenings)
        raw(",\"exact_fallbacks\":")
        int(plan.exactFallbacks)
        raw(",\"scanned_records\":")
        int(plan.scannedRecords)
        raw(",\"oversample\":")
        int(plan.oversample)
        raw(",\"rescored\":")
        int(plan.rescored)
        raw(",\"cached_filter\":")
        raw(plan.cachedFilter ? "true" : "false")
        raw("}")
    }

    /// `,"plans":{"unfiltered":n,"empty":n,"exact":n,"index":n,"post_filter":n}` for `stats`.
    public mutating func plansField(_ plans: [(kind: SearchPlan.Kind, count: Int)]) {
        raw(",\"plans\":{")
        for (index, entry) in plans.enumerated() {
            if index > 0 { raw(",") }
            string(entry.kind.rawValue)
            raw(":")
            int(entry.count)
        }
        raw("}")
    }

    /// `,"recall_calibration_state":"off"|"none"|"pending"|"done"|"failed"` for `stats`
    /// (`RecallCalibrator.Status`): "pending" while a calibration runs in the background.
    public mutating func recallCalibrationStateField(_ state: RecallCalibrator.Status) {
        raw(",\"recall_calibration_state\":")
        string(state.rawValue)
    }

    /// `,"recall_calibration":{"target":…,"parameter":"ef_search"|"nprobe","value":…,"recall":…,"recall_lower_bound":…,"reached":…,"queries":…}`
    /// for `stats`, or `null` when no calibration ran (`RecallCalibration`).
    public mutating func recallCalibrationField(_ calibration: RecallCalibration?) {
        raw(",\"recall_calibration\":")
        guard let calibration else {
            raw("null")
            return
        }
        raw("{\"target\":")
        value(.double(calibration.target))
        raw(",\"parameter\":")
        string(calibration.parameter.rawValue)
        raw(",\"value\":")
        int(calibration.value)
        raw(",\"recall\":")
        value(.double((calibration.recall * 1000).rounded() / 1000))
        raw(",\"recall_lower_bound\":")
        value(.double((calibration.recallLowerBound * 1000).rounded() / 1000))
        raw(",\"reached\":")
        raw(calibration.reached ? "true" : "false")
        raw(",\"queries\":")
        int(calibration.queries)
        raw("}")
    }
}
