package worker

// Code is an error code the worker records on a status record when the
// failure is not an answer of the API (those carry the API's own code:
// "700", "1002", "http_400", "validation", …, and none of them was paid
// for: the vendor bills successful calls only).
type Code string

// The worker's codes. Every one has an entry in PaidFailures: a new code
// without a decision there fails TestEveryCodeHasAPaymentDecision.
const (
	CodeQuota              Code = "quota"               // no token of the shared quota in time
	CodeBudget             Code = "budget"              // the tenant's budget of paid calls is spent for the period
	CodeStorageUnavailable Code = "storage_unavailable" // the bucket was unreachable before paying (storage gate)
	CodeStatusUnavailable  Code = "status_unavailable"  // Redis refused the last checkpoint write: nothing paid until it takes one
	CodeKeyTemplate        Code = "key_template"        // the key template cannot render a safe key
	CodeBucket             Code = "bucket"              // a request's own bucket does not exist, or is not its tenant's
	CodeKeyTaken           Code = "key_taken"           // the key holds another request's object: never written over
	CodeResultHost         Code = "result_host"         // the result URL is off the allow-list
	CodeInput              Code = "input"               // a claim-checked image cannot be read
	CodeResultExpired      Code = "result_expired"      // the paid result URL expired before it was copied
	CodeResultDownload     Code = "result_download"     // the result could not be downloaded
	CodeStorageUpload      Code = "storage_upload"      // the result could not be uploaded
	CodeTimeout            Code = "timeout"             // the attempt ran out of time
	CodeInterrupted        Code = "interrupted"         // the worker was shutting down
	CodeLeaseLost          Code = "lease_lost"          // the worker stopped renewing its lease; another task runs the crop
	CodeInternal           Code = "internal"            // anything else (a status store error, a bug)
	CodeCoalescing         Code = "coalescing"          // a twin with the same crop key is paying; handed back to reuse its result
	// The feeder's: a backlog entry that can never be fed ends its request
	// failed, counted in its batch, rather than dropped.
	CodeRecordLost Code = "record_lost" // the waiting request's record was gone (Redis lost it) and its entry holds only its id
	CodeBadEntry   Code = "bad_entry"   // the backlog entry cannot be read (a payload this version does not know, or not its request's)
)

// PaymentDecision says whether a failure with a code can end a request
// after its crop was paid for, and what keeps that from happening.
type PaymentDecision struct {
	// AfterPayment: the code can be recorded after a paid call.
	AfterPayment bool
	// Why is the decision: where it is checked before paying, or why it
	// cannot be known before the call.
	Why string
}

// PaidFailures is the audit of every Code (the README's "What is paid for
// before it fails" lists the same).
var PaidFailures = map[Code]PaymentDecision{
	CodeQuota:              {false, "raised by the quota before the call; the call is not made"},
	CodeBudget:             {false, "the call is reserved against the tenant's budget (CROPQ_TENANT_BUDGETS) before it is made; refused, it is not made"},
	CodeStorageUnavailable: {false, "raised by the storage gate before the call; the task is handed back unpaid"},
	CodeStatusUnavailable:  {false, "raised right before the call while Redis refuses checkpoint writes; the task is handed back unpaid"},
	CodeKeyTemplate:        {false, "rendered at submission (tasks.Request.Validate) and again by the worker before paying; the worker's own CROPQ_KEY_TEMPLATE is rendered at start-up"},
	CodeInput:              {false, "the claim-checked image is read before the call (it is what the call sends)"},
	CodeBucket: {false, "a request's own bucket is checked (HEAD, trusted for a minute) before paying, the default bucket by the storage gate; " +
		"a bucket outside the tenant's walls (CROPQ_TENANT_BUCKETS) is refused at submission and again before paying"},
	CodeKeyTaken: {true, "the key of each format the result may have is looked at (HEAD) before paying when the template lacks {requestId}; " +
		"only another request writing the same key between that look and the write (conditional, If-None-Match) ends here after paying"},
	CodeResultHost: {true, "the result URL is chosen by the vendor in its answer; it cannot be known before the call. " +
		"A misconfigured CROPQ_RESULT_HOSTS fails every request this way: the alert on failures by code catches it"},
	CodeResultExpired: {true, "the URL's life is granted by the vendor in its answer; the checkpoint lets later attempts reuse a live URL, " +
		"an expired one is cropped again (counted as expiredRecrops)"},
	CodeResultDownload: {true, "a download of the vendor's result that fails cannot be foreseen; retried from the checkpoint, unpaid, until its URL expires"},
	CodeStorageUpload: {true, "an upload that fails cannot be foreseen; retried from the checkpoint, unpaid. " +
		"The storage gate stops new paid calls while uploads to the default bucket fail"},
	CodeTimeout:     {true, "the attempt's deadline can pass during the copy; the next attempt reuses the checkpoint"},
	CodeInterrupted: {true, "a shutdown can come during the copy; the next worker reuses the checkpoint"},
	CodeLeaseLost: {true, "a worker that froze or lost Redis past its lease (package lease) has its crop handed to another task, which reuses the checkpoint; " +
		"the lease is checked right before paying, so a worker that wakes up does not pay for a crop it no longer owns"},
	CodeInternal: {true, "a status store error after the call; the paid answer is kept in the checkpoint (written with retries) and reused"},
	CodeCoalescing: {false, "raised before the call, while a twin request with the same crop key holds its lease; " +
		"the task is handed back unpaid and reuses the twin's result (or pays if the twin failed or died)"},
	CodeRecordLost: {false, "raised by the feeder instead of feeding the request: no task is enqueued, no call is made"},
	CodeBadEntry:   {false, "raised by the feeder instead of feeding the request: no task is enqueued, no call is made"},
}
