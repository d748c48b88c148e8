import Testing
@testable import Hawkes

/// Every case of `../shared/golden/hawkes_golden.json` at the file's suggested tolerances:
/// values relative 1e-10 (absolute below 1), gradients relative 1e-8 (absolute below 1),
/// MAP p and beta relative 1e-6 with log-posterior >= golden − 1e-9·max(1, |golden|), and
/// prediction at the MAP relative 1e-6.
@Suite("Golden vectors")
struct GoldenTests {
    @Test("golden file is present and has 31 cases")
    func fileLoads() throws {
        let g = try #require(Golden.file, "cannot read \(Golden.url.path)")
        #expect(g.cases.count == 31)
    }

    @Test("moment-matched prior, mark mean and bounds")
    func priorAndBounds() throws {
        let g = try #require(Golden.file)
        let h = g.prior_hyper
        let prior = try HawkesPrior(muP: h.mu_p, muBeta: h.mu_beta, sigP: h.sig_p, sigBeta: h.sig_beta, corr: h.corr)
        #expect(prior == HawkesPrior.course)
        #expect(close(prior.logMeanP, g.prior_log_mean[0], rel: 1e-12))
        #expect(close(prior.logMeanBeta, g.prior_log_mean[1], rel: 1e-12))
        let c = prior.logCovariance, P = prior.logPrecision
        #expect(close(c.pp, g.prior_log_cov[0][0], rel: 1e-12))
        #expect(close(c.pBeta, g.prior_log_cov[0][1], rel: 1e-12))
        #expect(close(c.betaBeta, g.prior_log_cov[1][1], rel: 1e-12))
        #expect(close(P.pp, g.prior_log_precision[0][0], rel: 1e-12))
        #expect(close(P.pBeta, g.prior_log_precision[0][1], rel: 1e-12))
        #expect(close(P.betaBeta, g.prior_log_precision[1][1], rel: 1e-12))
        let marks = try MarkDistribution(alpha: g.alpha, mu: g.mu)
        #expect(close(marks.mean, g.E_m, rel: 1e-15))
        let est = try HawkesEstimator(marks: marks)
        #expect(close(est.bounds.p.lowerBound, g.bounds.p[0], rel: 1e-15, floor: 0))
        #expect(close(est.bounds.p.upperBound, g.bounds.p[1], rel: 1e-15, floor: 0))
        #expect(close(est.bounds.beta.lowerBound, g.bounds.beta[0], rel: 1e-15, floor: 0))
        #expect(close(est.bounds.beta.upperBound, g.bounds.beta[1], rel: 1e-15, floor: 0))
    }

    @Test("log-likelihood, priors, posterior and gradients at the 7 points", arguments: Golden.cases)
    func pointValues(_ c: GoldenCase) throws {
        let cascade = try ObservedCascade(times: c.t, marks: c.m, observationEnd: c.T)
        let prior = HawkesPrior.course
        #expect(c.points.count == 7)
        for pt in c.points {
            let ll = cascade.logLikelihoodWithGradient(p: pt.p, beta: pt.beta)
            let lp = cascade.logPosteriorWithGradient(p: pt.p, beta: pt.beta, prior: prior)
            let where_ = "\(c.id)/\(pt.name)"
            #expect(close(cascade.logLikelihood(p: pt.p, beta: pt.beta), pt.loglik, rel: 1e-10), "\(where_) loglik")
            #expect(close(ll.value, pt.loglik, rel: 1e-10), "\(where_) loglik")
            #expect(close(prior.logDensity(p: pt.p, beta: pt.beta), pt.log_prior_course, rel: 1e-10), "\(where_) prior")
            #expect(close(prior.fullLogDensity(p: pt.p, beta: pt.beta), pt.log_prior_full, rel: 1e-10), "\(where_) full prior")
            #expect(close(cascade.logPosterior(p: pt.p, beta: pt.beta, prior: prior), pt.log_posterior, rel: 1e-10), "\(where_) posterior")
            #expect(close(lp.value, pt.log_posterior, rel: 1e-10), "\(where_) posterior")
            #expect(close(ll.dp, pt.dloglik_dp, rel: 1e-8), "\(where_) dLL/dp \(ll.dp) vs \(pt.dloglik_dp)")
            #expect(close(ll.dBeta, pt.dloglik_dbeta, rel: 1e-8), "\(where_) dLL/dbeta \(ll.dBeta) vs \(pt.dloglik_dbeta)")
            #expect(close(lp.dp, pt.dlogpost_dp, rel: 1e-8), "\(where_) dlogpost/dp \(lp.dp) vs \(pt.dlogpost_dp)")
            #expect(close(lp.dBeta, pt.dlogpost_dbeta, rel: 1e-8), "\(where_) dlogpost/dbeta \(lp.dBeta) vs \(pt.dlogpost_dbeta)")
            #expect(close(lp.dLogP, pt.dlogpost_dlogp, rel: 1e-8), "\(where_) dlogpost/dlogp")
            #expect(close(lp.dLogBeta, pt.dlogpost_dlogbeta, rel: 1e-8), "\(where_) dlogpost/dlogbeta")
        }
    }

    @Test("global MAP and the prediction at it", arguments: Golden.cases)
    func map(_ c: GoldenCase) throws {
        let ref = c.map_global
        let fit = try HawkesEstimator.course.fit(times: c.t, marks: c.m, observationEnd: c.T)
        #expect(abs(fit.p / ref.p - 1) <= 1e-6, "\(c.id) p \(fit.p) vs \(ref.p)")
        #expect(abs(fit.beta / ref.beta - 1) <= 1e-6, "\(c.id) beta \(fit.beta) vs \(ref.beta)")
        #expect(fit.logPosterior >= ref.log_posterior - 1e-9 * max(1, abs(ref.log_posterior)),
                "\(c.id) log-posterior \(fit.logPosterior) below \(ref.log_posterior)")
        #expect(fit.pAtUpper == ref.p_at_upper && fit.pAtLower == ref.p_at_lower)
        #expect(fit.betaAtUpper == ref.beta_at_upper && fit.betaAtLower == ref.beta_at_lower)
        // prediction at our MAP vs the golden prediction at the golden MAP
        let pr = ref.prediction
        #expect(fit.nObs == pr.n)
        #expect(close(fit.g1, pr.G1, rel: 1e-6, floor: 0), "\(c.id) G1 \(fit.g1) vs \(pr.G1)")
        #expect(close(fit.nStar, pr.n_star, rel: 1e-6, floor: 0), "\(c.id) n* \(fit.nStar) vs \(pr.n_star)")
        #expect(close(fit.forecast, pr.N, rel: 1e-6, floor: 0), "\(c.id) N \(fit.forecast) vs \(pr.N)")
        #expect(close(fit.nSupp, pr.N - Double(pr.n), rel: 1e-6, floor: 0))
        // the prediction function itself at the golden MAP parameters
        let cascade = try ObservedCascade(times: c.t, marks: c.m, observationEnd: c.T)
        let at = try cascade.prediction(p: ref.p, beta: ref.beta)
        #expect(close(at.g1, pr.G1, rel: 1e-10, floor: 0), "\(c.id) G1 at golden MAP")
        #expect(close(at.nStar, pr.n_star, rel: 1e-12, floor: 0))
        #expect(close(at.forecast, pr.N, rel: 1e-10, floor: 0))
        // the log-posterior the fit reports is the log-posterior at the returned point
        #expect(close(fit.logPosterior, cascade.logPosterior(p: fit.p, beta: fit.beta), rel: 1e-12))
    }
}
