import SteerCore
import SteerProtocol

extension RequestHandler {
    /// The served collection a request addressed, for labelling metrics: nil for ops that address no
    /// collection (`Request.collectionOperations` lists those that do) and for a name that resolves to
    /// no served collection (an unknown name is client input: labelling by it would make the label set
    /// unbounded). An alias is resolved to its collection, so label values are only served collections'
    /// names: at most `--max-collections` + 1.
    func servedCollection(_ request: Request) -> String? {
        guard Request.collectionOperations.contains(request.operation.name) else { return nil }
        return collections.servedName(request.collection)
    }
}
